"""int8 with a scale and zero point per token: the ``int8-per-token`` variant.

``quantize_dynamic`` gives a weight MatMul's input one scale for the whole
tensor. On BERT-style encoders the [CLS] token is an outlier at the FFN
inputs (max |x| 24-30 against 2-5 for a median token, docs/performance.md),
so that one scale wastes most of the int8 range of every other token. Here
each token (row of the last axis) gets its own range, mapped onto 0..255:

    s, z = (max - min) / 255, round(-min / s)                per token (0 kept exact)
    q    = QuantizeLinear(x as [M, K], s, z, axis=0)          uint8, per row
    y    = s * MatMulIntegerToFloat(q, W8 + 128, 1, w_scale, -, 128) - (s * z) * colsum(W8 * w_scale)

``W8`` is int8 per output channel (-127..127), stored as uint8 with a zero
point of 128, so ONNX Runtime runs its u8u8 GEMM, which is exact on every x86
CPU. Its u8s8 GEMM (int8 weights as they are) is exact only with VNNI: on AVX2,
and on AVX-512 without VNNI, it adds pairs of u8 x s8 products in int16
(``vpmaddubsw``), which saturates above 32,767, and per-token inputs, which use
all 256 levels on every token, reach 255 x 127 x 2 = 64,770. Measured on a
2-core AMD EPYC with AVX2 only, 48 SQuAD features spread over the shared part,
logit error against fp32 (share of the fp32 spread) / best start-end agreement:
u8s8 0.078 / 0.833 (whole part: 97.5% of fp32's F1), u8s8 with 7-bit weights
0.057 / 0.885 (98.5%), u8u8 0.036 / 0.896. The variant is one file for every
node, so it uses the recipe that is exact on all of them.

A one-sided input (GELU's output, the second FFN MatMul's input) gets all 256
levels instead of half. The
quantization of an input is shared by every MatMul that reads it (Q, K and V
read one tensor). ``MatMulIntegerToFloat`` is ONNX Runtime's com.microsoft op,
so the variant is for its CPU provider; the cost over dynamic int8 (u8s8) is
the u8u8 GEMM, the per-token Mul/Sub on each output and the min/max/quantize
passes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

# A row of zeros (padding) would give a zero scale.
EPSILON = 1e-8


# Weight levels each side of zero (symmetric int8).
WEIGHT_LEVELS = 127
# The weights are stored as uint8 = int8 + 128 (u8u8 GEMM: exact on every x86 CPU).
WEIGHT_ZERO_POINT = 128


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (column): (int8 weight, fp32 scale per column)."""
    scale = np.abs(w).max(axis=0) / float(WEIGHT_LEVELS)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return np.clip(np.round(w / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8), scale


def rewrite(source: Path, out: Path, matmuls: Mapping[str, str]) -> int:
    """Write ``source`` with the MatMuls of ``matmuls`` (node name -> weight) in per-token int8; how many."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    quantized_inputs: dict[str, str] = {}  # input -> the prefix of its quantized tensors
    constants = [
        numpy_helper.from_array(np.array(EPSILON, np.float32), "pt_eps"),
        numpy_helper.from_array(np.array([-1], np.int64), "pt_flat"),
        numpy_helper.from_array(np.array(0.0, np.float32), "pt_zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "pt_one"),
        numpy_helper.from_array(np.array(1.0 / 255.0, np.float32), "pt_inv255"),
        numpy_helper.from_array(np.array(255.0, np.float32), "pt_255"),
    ]
    nodes = []
    done = 0
    for node in graph.node:
        if node.name not in matmuls or node.op_type != "MatMul":
            nodes.append(node)
            continue
        x, w_name, y = node.input[0], node.input[1], node.output[0]
        if x not in quantized_inputs:
            quantized_inputs[x] = f"pt_{len(quantized_inputs)}"
            nodes += _quantize_rows(x, quantized_inputs[x])
        p = quantized_inputs[x]
        w8, w_scale = quantize_weight(numpy_helper.to_array(weights[w_name]))
        m = f"{node.name}_pt"
        stored = (w8.astype(np.int16) + WEIGHT_ZERO_POINT).astype(np.uint8)
        constants += [
            numpy_helper.from_array(stored, f"{m}_w8"), numpy_helper.from_array(w_scale, f"{m}_wscale"),
            numpy_helper.from_array(np.full(w8.shape[1], WEIGHT_ZERO_POINT, np.uint8), f"{m}_wzero"),
        ]  # fmt: skip
        # y = s * (q @ W8) * w_scale - (s * z) * (column sums of W8 * w_scale)
        column = (w8.astype(np.float32).sum(axis=0) * w_scale).astype(np.float32)
        constants.append(numpy_helper.from_array(column, f"{m}_column"))
        nodes += [
            helper.make_node("MatMulIntegerToFloat", [f"{p}_q", f"{m}_w8", "pt_one", f"{m}_wscale", "", f"{m}_wzero"],
                             [f"{m}_f"], name=f"{m}_MatMulIntegerToFloat", domain="com.microsoft"),
            helper.make_node("Mul", [f"{m}_f", f"{p}_scale"], [f"{m}_s"], name=f"{m}_MulScale"),
            helper.make_node("Mul", [f"{p}_offset", f"{m}_column"], [f"{m}_o"], name=f"{m}_MulOffset"),
            helper.make_node("Sub", [f"{m}_s", f"{m}_o"], [y], name=f"{m}_SubOffset"),
        ]
        done += 1
    used = {i for n in nodes for i in n.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + [c for c in constants if c.name in used])
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save_model(model, str(out))
    return done


def _quantize_rows(x: str, p: str) -> list:
    """Per row: scale ``{p}_scale`` = (max - min) / 255, zero point round(-min / scale), ``{p}_offset`` = scale * zero point."""
    from onnx import TensorProto, helper

    def node(op, inputs, output, **attrs):
        return helper.make_node(op, inputs, [output], name=f"{output}_{op}", **attrs)

    return [
        node("ReduceMax", [x], f"{p}_hi", axes=[-1], keepdims=1),
        node("ReduceMin", [x], f"{p}_lo0", axes=[-1], keepdims=1),
        node("Min", [f"{p}_lo0", "pt_zero"], f"{p}_lo"),  # 0 stays representable
        node("Max", [f"{p}_hi", "pt_zero"], f"{p}_hi0"),
        node("Sub", [f"{p}_hi0", f"{p}_lo"], f"{p}_span"),
        node("Max", [f"{p}_span", "pt_eps"], f"{p}_spane"),
        node("Mul", [f"{p}_spane", "pt_inv255"], f"{p}_scale"),  # [..., S, 1]
        node("Div", [f"{p}_lo", f"{p}_scale"], f"{p}_zneg"),
        node("Neg", [f"{p}_zneg"], f"{p}_zf"),
        node("Round", [f"{p}_zf"], f"{p}_zr"),
        node("Clip", [f"{p}_zr", "pt_zero", "pt_255"], f"{p}_zc"),
        node("Mul", [f"{p}_zc", f"{p}_scale"], f"{p}_offset"),  # [..., S, 1]
        node("Reshape", [f"{p}_scale", "pt_flat"], f"{p}_rows"),
        node("Reshape", [f"{p}_zc", "pt_flat"], f"{p}_zrows"),
        node("Cast", [f"{p}_zrows"], f"{p}_zp", to=TensorProto.UINT8),
        node("Shape", [x], f"{p}_shape"),
        node("Shape", [x], f"{p}_k", start=-1),
        node("Concat", ["pt_flat", f"{p}_k"], f"{p}_2d", axis=0),
        node("Reshape", [x, f"{p}_2d"], f"{p}_x2"),
        node("QuantizeLinear", [f"{p}_x2", f"{p}_rows", f"{p}_zp"], f"{p}_q2", axis=0),
        node("Reshape", [f"{p}_q2", f"{p}_shape"], f"{p}_q"),
    ]
