"""int8 with one activation scale per token: the ``int8-per-token`` variant.

``quantize_dynamic`` gives a weight MatMul's input one scale for the whole
tensor. On BERT-style encoders the [CLS] token is an outlier at the FFN
inputs (max |x| 24-30 against 2-5 for a median token, docs/performance.md),
so that one scale wastes most of the int8 range of every other token. Here
each token (row of the last axis) gets its own symmetric scale:

    s   = max(|x|, over the row) / 127              one per token, [.., S, 1]
    q   = round(x / s) + 128                         uint8, zero point 128 (one Add and a Cast)
    y   = MatMulInteger(q, W8, 128) * s * w_scale    W8: int8 per output channel

The quantization of an input is shared by every MatMul that reads it (Q, K
and V read one tensor). It is the same int8 x int8 arithmetic as dynamic
int8 (ONNX Runtime's u8s8 kernels), plus a few element-wise passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

# A row of zeros (padding) would give a zero scale.
EPSILON = 1e-8


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column): (int8 weight, fp32 scale per column)."""
    scale = np.abs(w).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def rewrite(source: Path, out: Path, matmuls: Mapping[str, str]) -> int:
    """Write ``source`` with the MatMuls of ``matmuls`` (node name -> weight) in per-token int8; how many."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    quantized_inputs: dict[str, tuple[str, str]] = {}  # input -> (its uint8 tensor, its scale)
    constants = [
        numpy_helper.from_array(np.array(127.0, np.float32), "pt_127"),
        numpy_helper.from_array(np.array(1.0 / 127.0, np.float32), "pt_inv127"),
        numpy_helper.from_array(np.array(EPSILON, np.float32), "pt_eps"),
        numpy_helper.from_array(np.array(128.5, np.float32), "pt_shift"),
        numpy_helper.from_array(np.array(128, np.uint8), "pt_zero_point"),
    ]
    nodes = []
    done = 0
    for node in graph.node:
        if node.name not in matmuls or node.op_type != "MatMul":
            nodes.append(node)
            continue
        x, w_name, y = node.input[0], node.input[1], node.output[0]
        if x not in quantized_inputs:
            p = f"pt_{len(quantized_inputs)}"
            quantized_inputs[x] = (f"{p}_q", f"{p}_scale")
            nodes += _quantize_rows(x, p)
        q, scale = quantized_inputs[x]
        w8, w_scale = quantize_weight(numpy_helper.to_array(weights[w_name]))
        m = f"{node.name}_pt"
        constants += [numpy_helper.from_array(w8, f"{m}_w8"), numpy_helper.from_array(w_scale, f"{m}_wscale")]
        nodes += [
            helper.make_node("MatMulInteger", [q, f"{m}_w8", "pt_zero_point"], [f"{m}_i32"], name=f"{m}_MatMulInteger"),
            helper.make_node("Cast", [f"{m}_i32"], [f"{m}_f"], name=f"{m}_Cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{m}_f", scale], [f"{m}_s"], name=f"{m}_MulScale"),
            helper.make_node("Mul", [f"{m}_s", f"{m}_wscale"], [y], name=f"{m}_MulWScale"),
        ]
        done += 1
    used = {i for n in nodes for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + [c for c in constants if c.name in used])
    onnx.checker.check_model(model)
    onnx.save_model(model, str(out))
    return done


def _quantize_rows(x: str, p: str) -> list:
    """Nodes that quantize ``x`` per row to ``{p}_q`` (uint8, zero point 128) with the scale ``{p}_scale``."""
    from onnx import TensorProto, helper

    def node(op, inputs, output, **attrs):
        return helper.make_node(op, inputs, [output], name=f"{output}_{op}", **attrs)

    return [
        node("Abs", [x], f"{p}_abs"),
        node("ReduceMax", [f"{p}_abs"], f"{p}_max", axes=[-1], keepdims=1),
        node("Max", [f"{p}_max", "pt_eps"], f"{p}_maxe"),
        node("Div", ["pt_127", f"{p}_maxe"], f"{p}_inv"),
        node("Mul", [f"{p}_maxe", "pt_inv127"], f"{p}_scale"),
        node("Mul", [x, f"{p}_inv"], f"{p}_x"),
        # x/s is in [-127, 127]; + 128.5 and Cast's truncation is round(x/s) + 128 (halves up): no Round pass.
        node("Add", [f"{p}_x", "pt_shift"], f"{p}_u"),
        node("Cast", [f"{p}_u"], f"{p}_q", to=TensorProto.UINT8),
    ]
