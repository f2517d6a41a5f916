"""The ONNX Runtime backends: interface checks, clear errors, no silent CPU fallback."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.backends import available_backends, get_backend
from orchestrator.errors import BackendError, ModelError


def tiny_model(path, *, inputs=None, outputs=2, seq="seq", input_type=None):
    """A tiny ONNX model: start = float(input_ids) * mask, end = float(segment_ids)."""
    import onnx
    from onnx import TensorProto, helper

    input_type = input_type or TensorProto.INT64
    names = inputs or ["input_ids", "input_mask", "segment_ids"]
    value_infos = [helper.make_tensor_value_info(n, input_type, ["batch", seq]) for n in names]
    nodes, outs = [], []
    if outputs >= 1:
        nodes.append(helper.make_node("Cast", [names[0]], ["ids_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Cast", [names[1]], ["mask_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", ["ids_f", "mask_f"], ["start"]))
        outs.append(helper.make_tensor_value_info("start", TensorProto.FLOAT, ["batch", seq]))
    if outputs >= 2:
        nodes.append(helper.make_node("Cast", [names[-1]], ["end"], to=TensorProto.FLOAT))
        outs.append(helper.make_tensor_value_info("end", TensorProto.FLOAT, ["batch", seq]))
    graph = helper.make_graph(nodes, "tiny", value_infos, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def test_loads_runs_and_describes_itself(tmp_path):
    path = tiny_model(tmp_path / "ok.onnx")
    backend = get_backend("onnxruntime")
    backend.load(path, threads=1, batch_size=4)
    ids = np.array([[5, 6, 7], [8, 9, 0]], np.int32)
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.int64)
    seg = np.array([[0, 1, 1], [0, 0, 0]], np.int64)
    start, end = backend.run(ids, mask, seg)
    assert start.dtype == np.float32 and start.shape == (2, 3)
    np.testing.assert_array_equal(start, [[5, 6, 7], [8, 9, 0]])
    np.testing.assert_array_equal(end, seg)
    info = backend.device_info()
    assert info["device"] == "cpu" and info["providers"] == ["CPUExecutionProvider"]
    assert info["threads"] == 1 and info["model_path"] == str(path.resolve()) and info["onnxruntime"]
    assert backend.fixed_seq_length is None


def test_fixed_sequence_length_is_reported(tmp_path):
    backend = get_backend("onnxruntime")
    backend.load(tiny_model(tmp_path / "fixed.onnx", seq=384))
    assert backend.fixed_seq_length == 384


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r"nope\.onnx does not exist"):
        get_backend("onnxruntime").load(tmp_path / "nope.onnx")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match=r"cannot load model .*junk\.onnx") as info:
        get_backend("onnxruntime").load(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"inputs": ["input_ids", "attention_mask", "segment_ids"]}, r"lacks the input\(s\) input_mask"),
        ({"inputs": ["input_ids", "input_mask", "segment_ids", "extra"]}, r"unexpected input\(s\) extra"),
        ({"input_type": 6}, r"input input_ids is tensor\(int32\)"),  # 6 = INT32
        ({"outputs": 1}, r"has 1 float output\(s\)"),
    ],
)
def test_interface_mismatch(tmp_path, kwargs, message):
    path = tiny_model(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(ModelError, match=message) as info:
        get_backend("onnxruntime").load(path)
    assert "bad.onnx" in str(info.value) and "\n" not in str(info.value)


def test_cuda_on_a_machine_without_it_refuses(tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA; the refusal is tested where it does not")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider") as info:
        get_backend("onnxruntime-cuda").load(tiny_model(tmp_path / "ok.onnx"))
    assert "onnxruntime-gpu" in str(info.value)


def test_cuda_session_that_dropped_cuda_refuses(tmp_path, monkeypatch):
    """When CUDA is listed but the session comes up on the CPU only, load must fail."""
    import onnxruntime

    real = onnxruntime.InferenceSession

    def cpu_only_session(path, sess_options=None, providers=None):
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", cpu_only_session)
    backend = get_backend("onnxruntime-cuda")
    with pytest.raises(BackendError, match="dropped CUDAExecutionProvider"):
        backend.load(tiny_model(tmp_path / "ok.onnx"))
    assert backend.session is None


def test_unknown_backend_lists_the_names():
    with pytest.raises(BackendError, match="onnxruntime, onnxruntime-cuda"):
        get_backend("tensorrt")
    assert {"onnxruntime", "onnxruntime-cuda"} <= set(available_backends())


def test_run_before_load():
    with pytest.raises(BackendError, match="before load"):
        get_backend("onnxruntime").run(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))
