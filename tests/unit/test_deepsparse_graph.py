"""The DeepSparse model preparation: static shapes, LayerNorm/GELU rewrites, the on-disk cache.

Plain onnx + onnxruntime (to check the rewrites change no output); no deepsparse needed.
"""

from __future__ import annotations

from orchestrator.fileio import sha256_file

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from orchestrator.backends import deepsparse_graph as graph

HIDDEN = 16


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _ln_gelu_model(opset: int = 17, ln_axis: int = -1) -> onnx.ModelProto:
    """x [b, s, 16] -> MatMul -> LayerNormalization -> GELU written like orch's demo graph -> y."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("LayerNormalization", ["m", "gamma", "beta"], ["ln"], axis=ln_axis, epsilon=1e-12),
        helper.make_node("Mul", ["ln", "inv_sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["ln", "half"], ["xhalf"]),
        helper.make_node("Mul", ["xhalf", "erf1"], ["y"]),
    ]
    inits = [
        _const("w", rng.normal(size=(HIDDEN, HIDDEN))),
        _const("gamma", rng.normal(size=HIDDEN)),
        _const("beta", rng.normal(size=HIDDEN)),
        _const("inv_sqrt2", 1 / math.sqrt(2)),
        _const("one", 1.0),
        _const("half", 0.5),
    ]
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", HIDDEN])], initializer=inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


@pytest.mark.parametrize("opset", [17, 18])
def test_rewrites_keep_outputs_and_leave_only_forms_deepsparse_runs(opset):
    model = _ln_gelu_model(opset)
    rewritten = _copy(model)
    assert graph.make_deepsparse_friendly(rewritten) == 2  # one LayerNorm, one GELU
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "LayerNormalization" not in ops and ops.count("ReduceMean") == 2
    # GELU in PyTorch's export order: Div(x, sqrt2) -> Erf -> Add 1 -> Mul x -> Mul 0.5.
    by_output = {o: n for n in rewritten.graph.node for o in n.output}
    erf = next(n for n in rewritten.graph.node if n.op_type == "Erf")
    div = by_output[erf.input[0]]
    assert div.op_type == "Div"
    sqrt2 = next(i for i in rewritten.graph.initializer if i.name == div.input[1])
    assert numpy_helper.to_array(sqrt2) == pytest.approx(math.sqrt(2))
    final = by_output["y"]
    assert final.op_type == "Mul" and "half" in final.input
    assert "inv_sqrt2" not in {i.name for i in rewritten.graph.initializer}  # unused now
    x = np.random.default_rng(1).normal(size=(2, 5, HIDDEN)).astype(np.float32)
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_layer_norm_over_another_axis_is_left_alone():
    model = _ln_gelu_model(ln_axis=1)
    assert graph.make_deepsparse_friendly(model) == 1  # only the GELU
    assert "LayerNormalization" in [n.op_type for n in model.graph.node]


def test_a_gelu_with_another_constant_is_not_touched():
    model = _ln_gelu_model()
    for init in model.graph.initializer:
        if init.name == "inv_sqrt2":
            init.CopyFrom(_const("inv_sqrt2", 0.7))
    x = np.random.default_rng(2).normal(size=(1, 3, HIDDEN)).astype(np.float32)
    before = _run(model, x)
    assert graph.make_deepsparse_friendly(model) == 1  # only the LayerNorm
    assert "Div" in [n.op_type for n in model.graph.node]  # from the LayerNorm, not the GELU
    assert next(n for n in model.graph.node if n.op_type == "Erf").input[0] == "scaled"
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)


def _bert_interface_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["segment_ids"], ["seg_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["input_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "mask_f"], ["start_logits"]),
        helper.make_node("Add", ["seg_f", "mask_f"], ["end_logits"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "input_mask", "segment_ids")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in ("start_logits", "end_logits")]
    model = helper.make_model(helper.make_graph(nodes, "bert_io", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_prepare_static_fixes_shapes_caches_by_sha_and_shape(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(_bert_interface_model(), source)
    sha = sha256_file(source)
    cache = tmp_path / "cache"
    first = graph.prepare_static(None, source, sha, 4, 128, cache)
    assert first.parent == cache and sha[:16] in first.name and "b4-s128" in first.name
    prepared = onnx.load(str(first))
    for value in prepared.graph.input:
        assert [d.dim_value for d in value.type.tensor_type.shape.dim] == [4, 128]
    # The original file is untouched (deepsparse's own input_shapes would rewrite it in place).
    original = onnx.load(str(source))
    assert [d.dim_param for d in original.graph.input[0].type.tensor_type.shape.dim] == ["batch", "seq"]
    # A second call reuses the file; another shape gets its own.
    mtime = first.stat().st_mtime_ns
    assert graph.prepare_static(None, source, sha, 4, 128, cache) == first and first.stat().st_mtime_ns == mtime
    other = graph.prepare_static(None, source, sha, 4, 64, cache)
    assert other != first and "b4-s64" in other.name
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.name, other.name])  # no temp files left


def test_prepare_static_names_an_unreadable_model(tmp_path):
    from orchestrator.errors import ModelError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match=r"bad\.onnx") as info:
        graph.prepare_static(None, bad, sha256_file(bad), 1, 64, tmp_path / "cache")
    assert "\n" not in str(info.value)


def test_magnitude_prune_zeroes_the_smallest_matmul_weights():
    model = _ln_gelu_model()
    w_before = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    gamma_before = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "gamma"))
    assert graph.magnitude_prune(model, 0.75) == 1  # only the MatMul weight
    w = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    assert (w == 0).sum() == int(w.size * 0.75)
    kept = w != 0
    np.testing.assert_array_equal(w[kept], w_before[kept])
    assert np.abs(w_before[~kept]).max() <= np.abs(w_before[kept]).min()
    np.testing.assert_array_equal(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "gamma")), gamma_before)
    with pytest.raises(ValueError):
        graph.magnitude_prune(model, 1.0)
