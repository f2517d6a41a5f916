"""Build a BERT question-answering ONNX graph from encoder weights with onnx.helper.

The graph has the MLPerf BERT interface: int64 ``input_ids``, ``input_mask``,
``segment_ids`` of shape [batch, seq] in; ``start_logits`` and ``end_logits``
[batch, seq] float32 out, in that order. Batch and sequence length are both
dynamic so that padding removal can feed shorter sequences.

The weights use the Hugging Face ``BertModel`` naming (``embeddings.*``,
``encoder.layer.N.*``); linear weights are [out, in] as PyTorch stores them.
No torch is needed: the graph is written node by node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

OPSET = 17  # LayerNormalization became a standard op in opset 17
# IR version 8 keeps the file loadable by older runtimes (onnx 1.14 / deepsparse 1.8).
IR_VERSION = 8
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
OUTPUT_NAMES = ("start_logits", "end_logits")
# BERT's extended attention mask: padded keys get this added to their scores.
MASK_VALUE = -10000.0


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder (the fields of a Hugging Face ``config.json`` we use)."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, data: Mapping) -> BertConfig:
        """Pick the fields we need from a parsed ``config.json``."""
        return cls(
            num_hidden_layers=int(data["num_hidden_layers"]),
            hidden_size=int(data["hidden_size"]),
            num_attention_heads=int(data["num_attention_heads"]),
            intermediate_size=int(data["intermediate_size"]),
            layer_norm_eps=float(data.get("layer_norm_eps", 1e-12)),
            hidden_act=str(data.get("hidden_act", "gelu")),
        )


class _Graph:
    """Collects nodes and initializers; hands out unique tensor names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.initializers: list = []
        self._names: set[str] = set()
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer once; a second call with the same name reuses the first."""
        from onnx import numpy_helper

        if name not in self._names:
            self._names.add(name)
            self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        from onnx import helper

        if output is None:
            self._count += 1
            output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output


def _linear(g: _Graph, x: str, weights: Mapping[str, np.ndarray], prefix: str) -> str:
    """x @ W^T + b for a PyTorch-layout Linear named ``prefix``."""
    w = g.const(f"{prefix}.weight_t", np.asarray(weights[f"{prefix}.weight"], np.float32).T)
    b = g.const(f"{prefix}.bias", np.asarray(weights[f"{prefix}.bias"], np.float32))
    return g.op("Add", [g.op("MatMul", [x, w]), b])


def _layer_norm(g: _Graph, x: str, weights: Mapping[str, np.ndarray], prefix: str, eps: float) -> str:
    scale = g.const(f"{prefix}.weight", np.asarray(weights[f"{prefix}.weight"], np.float32))
    bias = g.const(f"{prefix}.bias", np.asarray(weights[f"{prefix}.bias"], np.float32))
    return g.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)


def _gelu(g: _Graph, x: str) -> str:
    # Exact (erf) GELU, as BERT's "gelu": 0.5 * x * (1 + erf(x / sqrt(2))).
    inv_sqrt2 = g.const("const_inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))
    one = g.const("const_one_f32", np.array(1.0, np.float32))
    half = g.const("const_half_f32", np.array(0.5, np.float32))
    erf = g.op("Erf", [g.op("Mul", [x, inv_sqrt2])])
    return g.op("Mul", [g.op("Mul", [x, half]), g.op("Add", [erf, one])])


def build_bert_qa_model(
    weights: Mapping[str, np.ndarray],
    config: BertConfig,
    qa_weight: np.ndarray,
    qa_bias: np.ndarray,
    *,
    graph_name: str = "bert_qa",
):
    """Build the ONNX model of a BERT encoder with a linear start/end head.

    Args:
        weights: encoder tensors by Hugging Face ``BertModel`` name.
        config: the encoder's shape.
        qa_weight: [2, hidden] weight of the question-answering head
            (row 0 gives start logits, row 1 end logits).
        qa_bias: [2] bias of that head.
        graph_name: the ONNX graph's name.

    Returns:
        An ``onnx.ModelProto`` (checked with ``onnx.checker``).

    Raises:
        KeyError: a tensor the config calls for is missing from ``weights``.
        ValueError: the config asks for an activation other than exact GELU.
    """
    import onnx
    from onnx import TensorProto, helper

    if config.hidden_act != "gelu":
        raise ValueError(f"only the exact 'gelu' activation is supported, not {config.hidden_act!r}")
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = hidden // heads
    eps = config.layer_norm_eps
    g = _Graph()

    # Embeddings: word + position (0..seq-1) + token type, then LayerNorm.
    word = g.const("embeddings.word_embeddings.weight", np.asarray(weights["embeddings.word_embeddings.weight"], np.float32))
    pos = g.const(
        "embeddings.position_embeddings.weight", np.asarray(weights["embeddings.position_embeddings.weight"], np.float32)
    )
    typ = g.const(
        "embeddings.token_type_embeddings.weight",
        np.asarray(weights["embeddings.token_type_embeddings.weight"], np.float32),
    )
    # Rows 0..seq-1 of the position table, sliced by the input's own length (a 1-D
    # Shape slice: ORT's optimizer mishandled a Gather of a scalar index + Range).
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    zero = g.const("const_zero_1d", np.array([0], np.int64))
    position_rows = g.op("Slice", [pos, zero, seq_len, zero])
    emb = g.op(
        "Add",
        [
            g.op("Add", [g.op("Gather", [word, "input_ids"], axis=0), position_rows]),
            g.op("Gather", [typ, "segment_ids"], axis=0),
        ],
    )
    x = _layer_norm(g, emb, weights, "embeddings.LayerNorm", eps)

    # Extended attention mask [batch, 1, 1, seq]: 0 for real tokens, -10000 for padding.
    mask_f = g.op("Cast", ["input_mask"], to=TensorProto.FLOAT)
    one_f = g.const("const_one_f32", np.array(1.0, np.float32))
    mask_value = g.const("const_mask_value", np.array(MASK_VALUE, np.float32))
    ext_mask = g.op("Mul", [g.op("Sub", [one_f, mask_f]), mask_value])
    ext_mask = g.op("Unsqueeze", [ext_mask, g.const("const_axes_1_2", np.array([1, 2], np.int64))])

    split_heads = g.const("const_split_heads", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = g.const("const_merge_heads", np.array([0, 0, hidden], np.int64))
    scale = g.const("const_attention_scale", np.array(1.0 / math.sqrt(head_dim), np.float32))

    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}"
        q = g.op("Transpose", [g.op("Reshape", [_linear(g, x, weights, f"{p}.attention.self.query"), split_heads])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [_linear(g, x, weights, f"{p}.attention.self.key"), split_heads])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [_linear(g, x, weights, f"{p}.attention.self.value"), split_heads])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), ext_mask])
        probs = g.op("Softmax", [scores], axis=-1)
        context = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]), merge_heads])
        attn = _linear(g, context, weights, f"{p}.attention.output.dense")
        x = _layer_norm(g, g.op("Add", [attn, x]), weights, f"{p}.attention.output.LayerNorm", eps)
        inter = _gelu(g, _linear(g, x, weights, f"{p}.intermediate.dense"))
        out = _linear(g, inter, weights, f"{p}.output.dense")
        x = _layer_norm(g, g.op("Add", [out, x]), weights, f"{p}.output.LayerNorm", eps)

    # QA head: [batch, seq, 2] -> start, end [batch, seq].
    qa_w = g.const("qa_outputs.weight_t", np.asarray(qa_weight, np.float32).T)
    qa_b = g.const("qa_outputs.bias", np.asarray(qa_bias, np.float32))
    logits = g.op("Add", [g.op("MatMul", [x, qa_w]), qa_b])
    last_axis = g.const("const_axis_last", np.array([-1], np.int64))
    g.nodes.append(
        helper.make_node("Split", [logits, g.const("const_split_1_1", np.array([1, 1], np.int64))], ["start_3d", "end_3d"], axis=-1)
    )
    g.op("Squeeze", ["start_3d", last_axis], output=OUTPUT_NAMES[0])
    g.op("Squeeze", ["end_3d", last_axis], output=OUTPUT_NAMES[1])

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in OUTPUT_NAMES]
    graph = helper.make_graph(g.nodes, graph_name, inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="orch")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model
