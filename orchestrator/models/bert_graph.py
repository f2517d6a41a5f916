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
from collections.abc import Mapping, Sequence
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
    # Exact (erf) GELU, as BERT's "gelu", written in the order PyTorch exports it,
    # (x * (1 + erf(x / sqrt 2))) * 0.5: ONNX Runtime fuses this form into one Gelu
    # kernel, and DeepSparse 1.8 fuses only this form.
    sqrt2 = g.const("const_sqrt2", np.array(math.sqrt(2.0), np.float32))
    one = g.const("const_one_f32", np.array(1.0, np.float32))
    half = g.const("const_half_f32", np.array(0.5, np.float32))
    erf = g.op("Erf", [g.op("Div", [x, sqrt2])])
    return g.op("Mul", [g.op("Mul", [x, g.op("Add", [erf, one])]), half])


def _encoder(g: _Graph, weights: Mapping[str, np.ndarray], config: BertConfig, *, token_types: bool = True) -> list[str]:
    """Embeddings and every encoder layer; the hidden state after each, as [batch * seq, hidden] rows.

    Element 0 is the embeddings' LayerNorm output, element i the output of layer i.
    """
    if config.hidden_act != "gelu":
        raise ValueError(f"only the exact 'gelu' activation is supported, not {config.hidden_act!r}")
    from onnx import TensorProto

    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = hidden // heads
    eps = config.layer_norm_eps

    # Embeddings: word + position (0..seq-1) + token type, then LayerNorm.
    word = g.const("embeddings.word_embeddings.weight", np.asarray(weights["embeddings.word_embeddings.weight"], np.float32))
    pos = g.const(
        "embeddings.position_embeddings.weight", np.asarray(weights["embeddings.position_embeddings.weight"], np.float32)
    )
    type_table = np.asarray(weights["embeddings.token_type_embeddings.weight"], np.float32)
    # Rows 0..seq-1 of the position table, sliced by the input's own length (a 1-D
    # Shape slice: ORT's optimizer mishandled a Gather of a scalar index + Range).
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    zero = g.const("const_zero_1d", np.array([0], np.int64))
    position_rows = g.op("Slice", [pos, zero, seq_len, zero])
    emb = g.op(
        "Add",
        [
            g.op("Add", [g.op("Gather", [word, "input_ids"], axis=0), position_rows]),
            # token_types=False: every token gets type 0 (an encoder fine-tuned on single
            # segments, like all-MiniLM-L6-v2, never trained its type-1 row).
            g.op("Gather", [g.const("embeddings.token_type_embeddings.weight", type_table), "segment_ids"], axis=0)
            if token_types
            else g.const("embeddings.token_type_embeddings.row0", type_table[0]),
        ],
    )
    x = _layer_norm(g, emb, weights, "embeddings.LayerNorm", eps)
    # The encoder runs on [batch * seq, hidden] rows: a 2-D MatMul + bias Add is one
    # Gemm for ONNX Runtime (bias inside the kernel), and the residual Add +
    # LayerNormalization one SkipLayerNormalization. Attention alone needs
    # [batch, seq, heads, head_dim]; the hidden states handed out are [batch, seq, hidden].
    batch_seq = g.op("Shape", ["input_ids"])
    rows_shape = g.const("const_rows_shape", np.array([-1, hidden], np.int64))
    heads_shape = g.op("Concat", [batch_seq, g.const("const_heads_dims", np.array([heads, head_dim], np.int64))], axis=0)
    x = g.op("Reshape", [x, rows_shape])
    states = [x]

    # Extended attention mask [batch, 1, 1, seq]: 0 for real tokens, -10000 for padding.
    mask_f = g.op("Cast", ["input_mask"], to=TensorProto.FLOAT)
    one_f = g.const("const_one_f32", np.array(1.0, np.float32))
    mask_value = g.const("const_mask_value", np.array(MASK_VALUE, np.float32))
    ext_mask = g.op("Mul", [g.op("Sub", [one_f, mask_f]), mask_value])
    ext_mask = g.op("Unsqueeze", [ext_mask, g.const("const_axes_1_2", np.array([1, 2], np.int64))])

    scale = g.const("const_attention_scale", np.array(1.0 / math.sqrt(head_dim), np.float32))

    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}"
        q = g.op("Transpose", [g.op("Reshape", [_linear(g, x, weights, f"{p}.attention.self.query"), heads_shape])], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [g.op("Reshape", [_linear(g, x, weights, f"{p}.attention.self.key"), heads_shape])], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [g.op("Reshape", [_linear(g, x, weights, f"{p}.attention.self.value"), heads_shape])], perm=[0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), ext_mask])
        probs = g.op("Softmax", [scores], axis=-1)
        context = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3]), rows_shape])
        attn = _linear(g, context, weights, f"{p}.attention.output.dense")
        x = _layer_norm(g, g.op("Add", [attn, x]), weights, f"{p}.attention.output.LayerNorm", eps)
        inter = _gelu(g, _linear(g, x, weights, f"{p}.intermediate.dense"))
        out = _linear(g, inter, weights, f"{p}.output.dense")
        x = _layer_norm(g, g.op("Add", [out, x]), weights, f"{p}.output.LayerNorm", eps)
        states.append(x)
    return states


def _check_layers(layers: Sequence[int], config: BertConfig) -> tuple[int, ...]:
    layers = tuple(int(i) for i in layers)
    if not layers or any(not 0 <= i <= config.num_hidden_layers for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"head layers {layers} must be distinct indexes in 0..{config.num_hidden_layers}")
    return layers


def _concat_states(g: _Graph, states: list[str], layers: tuple[int, ...]) -> str:
    """The chosen states side by side, back in [batch, seq, hidden * len(layers)]."""
    rows = states[layers[0]] if len(layers) == 1 else g.op("Concat", [states[i] for i in layers], axis=-1)
    shape = g.op("Concat", [g.op("Shape", ["input_ids"]), g.const("const_minus_one_1d", np.array([-1], np.int64))], axis=0)
    return g.op("Reshape", [rows, shape])


def _head_logits(
    g: _Graph, states: list[str], layers: tuple[int, ...], window: int, qa_weight: np.ndarray, qa_bias: np.ndarray
) -> str:
    """Start/end logits [batch, seq, 2] of the linear head over the chosen states and a window of positions.

    The head is ``qa_weight @ window_states(concat(states))`` (``head_fit``'s layout:
    window position k reads the token at offset k - r, r = window // 2, each block
    the chosen layers side by side; padded positions read as zeros). Being linear,
    it is computed the cheap way round: the concatenated states times a
    [hidden x layers, 2 x window] matrix (every window position's start/end
    columns), then the window's shifted 2-column slices of that small result
    added up, instead of first copying the states into a window x wider tensor.
    Same sums in another order (logits within 1e-5 of the other way); with the demo's
    5 layers x 3 positions the model runs 4-5% faster, ``orch bench`` 3% (docs/performance.md).
    DeepSparse 1.8 compiles this form (not one MatMul per layer, nor ONNX's Sum).
    """
    from onnx import TensorProto

    x = _concat_states(g, states, layers)  # [batch, seq, hidden * layers]
    width = qa_weight.shape[1] // window
    # Columns (k, start/end): [2, window, width] -> [width, window * 2].
    w = np.ascontiguousarray(qa_weight.reshape(2, window, width).transpose(2, 1, 0).reshape(width, window * 2))
    y = g.op("MatMul", [x, g.const("qa_outputs.weight_t", w)])  # [batch, seq, window * 2]
    bias = g.const("qa_outputs.bias", np.asarray(qa_bias, np.float32))
    if window == 1:
        return g.op("Add", [y, bias])
    radius = window // 2
    # Padded positions contribute nothing (their states are zeros in head_fit's layout).
    mask = g.op("Unsqueeze", [g.op("Cast", ["input_mask"], to=TensorProto.FLOAT), g.const("const_axes_last", np.array([-1], np.int64))])
    padded = g.op("Pad", [g.op("Mul", [y, mask]), g.const(f"const_window_pads_{radius}", np.array([0, radius, 0, 0, radius, 0], np.int64))])
    axes = g.const("const_axes_seq_last", np.array([1, 2], np.int64))
    total = None
    for k in range(window):
        end_value = -(2 * radius - k) if 2 * radius - k > 0 else np.iinfo(np.int64).max
        start = g.const(f"const_window_start_{k}", np.array([k, 2 * k], np.int64))
        end = g.const(f"const_window_end_{k}_{radius}", np.array([end_value, 2 * k + 2], np.int64))
        part = g.op("Slice", [padded, start, end, axes])  # position t reads t + k - radius
        total = part if total is None else g.op("Add", [total, part])
    return g.op("Add", [total, bias])


def _finish(g: _Graph, outputs: list, graph_name: str):
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in INPUT_NAMES]
    graph = helper.make_graph(g.nodes, graph_name, inputs, outputs, initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="orch")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build_bert_qa_model(
    weights: Mapping[str, np.ndarray],
    config: BertConfig,
    qa_weight: np.ndarray,
    qa_bias: np.ndarray,
    *,
    head_layers: Sequence[int] | None = None,
    head_window: int = 1,
    token_types: bool = True,
    graph_name: str = "bert_qa",
):
    """Build the ONNX model of a BERT encoder with a linear start/end head.

    Args:
        weights: encoder tensors by Hugging Face ``BertModel`` name.
        config: the encoder's shape.
        qa_weight: [2, hidden * len(head_layers) * head_window] weight of the
            question-answering head (row 0 gives start logits, row 1 end logits).
        qa_bias: [2] bias of that head.
        head_layers: the hidden states the head reads, concatenated in this order
            along the hidden axis (0: the embeddings, i: the output of layer i);
            default: the last layer only, as BERT's own head.
        head_window: positions the head reads for each token (odd): itself and
            (head_window - 1) / 2 neighbours on each side, nearest-left first
            (``head_fit.window_states``); 1 is BERT's own per-token head.
        token_types: add each token's type embedding (``segment_ids``); False gives
            every token type 0 (``segment_ids`` is then read by nothing but the interface).
        graph_name: the ONNX graph's name.

    Returns:
        An ``onnx.ModelProto`` (checked with ``onnx.checker``).

    Raises:
        KeyError: a tensor the config calls for is missing from ``weights``.
        ValueError: the config asks for an activation other than exact GELU, the
            head layers are out of range, or the head's shape does not fit them.
    """
    from onnx import TensorProto, helper

    layers = _check_layers(head_layers if head_layers is not None else (config.num_hidden_layers,), config)
    qa_weight = np.asarray(qa_weight, np.float32)
    if head_window < 1 or head_window % 2 == 0:
        raise ValueError(f"head_window must be odd and positive, not {head_window}")
    width = config.hidden_size * len(layers) * head_window
    if qa_weight.shape != (2, width) or np.shape(qa_bias) != (2,):
        raise ValueError(
            f"QA head of shape {qa_weight.shape} / {np.shape(qa_bias)} does not fit layers {layers} "
            f"with window {head_window} (needs (2, {width}) / (2,))"
        )
    g = _Graph()
    # QA head: [batch, seq, 2] -> start, end [batch, seq].
    logits = _head_logits(g, _encoder(g, weights, config, token_types=token_types), layers, head_window, qa_weight, qa_bias)
    last_axis = g.const("const_axis_last", np.array([-1], np.int64))
    g.nodes.append(
        helper.make_node("Split", [logits, g.const("const_split_1_1", np.array([1, 1], np.int64))], ["start_3d", "end_3d"], axis=-1)
    )
    g.op("Squeeze", ["start_3d", last_axis], output=OUTPUT_NAMES[0])
    g.op("Squeeze", ["end_3d", last_axis], output=OUTPUT_NAMES[1])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in OUTPUT_NAMES]
    return _finish(g, outputs, graph_name)


STATES_OUTPUT = "states"


def build_bert_states_model(
    weights: Mapping[str, np.ndarray],
    config: BertConfig,
    layers: Sequence[int],
    *,
    token_types: bool = True,
    graph_name: str = "bert_states",
):
    """The same encoder without a head: the chosen hidden states, concatenated.

    What a head is fitted on (``orchestrator.models.head_fit``): the model's
    ``STATES_OUTPUT`` is [batch, seq, hidden * len(layers)] float32, the exact
    input the head of ``build_bert_qa_model(..., head_layers=layers)`` reads.

    Raises:
        KeyError, ValueError: as ``build_bert_qa_model``.
    """
    from onnx import TensorProto, helper

    layers = _check_layers(layers, config)
    g = _Graph()
    x = _concat_states(g, _encoder(g, weights, config, token_types=token_types), layers)
    g.op("Identity", [x], output=STATES_OUTPUT)
    outputs = [helper.make_tensor_value_info(STATES_OUTPUT, TensorProto.FLOAT, ["batch", "seq", config.hidden_size * len(layers)])]
    return _finish(g, outputs, graph_name)
