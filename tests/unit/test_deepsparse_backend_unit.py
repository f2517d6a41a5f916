"""The DeepSparse backend's bucket/batch logic against a fake ``deepsparse`` module.

The fake engine reads the static shape and input order from the prepared
model file it is given, refuses any other shape, and answers with a simple
function of its inputs, so padding, trimming and scattering are checked
exactly. The real deepsparse runs in tests/integration/test_deepsparse_backend.py.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from orchestrator.backends import get_backend
from orchestrator.backends.batching import BUCKETS, PAD_LOGIT, predict
from orchestrator.backends.deepsparse import DeepSparseBackend, pad_batch
from orchestrator.errors import BackendError, ModelError

NAMES = ("input_ids", "input_mask", "segment_ids")


class FakeEngine:
    """Stands in for ``deepsparse.Engine``: start = ids * mask, end = segment + mask."""

    created: list[tuple[int, int]] = []

    def __init__(self, path: str, batch_size: int, num_cores: int | None) -> None:
        model = onnx.load(path)
        self.order = [v.name for v in model.graph.input]
        dims = {tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in model.graph.input}
        assert len(dims) == 1, dims
        self.shape = dims.pop()
        assert self.shape[0] == batch_size and all(self.shape), f"not static: {self.shape}"
        self.num_cores = num_cores or 2
        self.cpu_avx_type = "fake"
        self.fraction_of_supported_ops = 1.0
        self.batches = 0
        FakeEngine.created.append(self.shape)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        assert len(inputs) == 3
        for a in inputs:
            assert a.shape == self.shape and a.dtype == np.int64, (a.shape, a.dtype)
        feed = dict(zip(self.order, inputs))
        self.batches += 1
        return [
            (feed["input_ids"] * feed["input_mask"]).astype(np.float32),
            (feed["segment_ids"] + feed["input_mask"]).astype(np.float32),
        ]


@pytest.fixture
def fake_deepsparse(monkeypatch):
    module = types.ModuleType("deepsparse")
    module.Engine = FakeEngine
    module.__version__ = "0.0-fake"
    monkeypatch.setitem(sys.modules, "deepsparse", module)
    FakeEngine.created = []
    return module


def _model(tmp_path, *, order=NAMES, seq="seq", name="m.onnx"):
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["segment_ids"], ["seg_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["input_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "mask_f"], ["start_logits"]),
        helper.make_node("Add", ["seg_f", "mask_f"], ["end_logits"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", seq]) for n in order]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", seq]) for n in ("start_logits", "end_logits")]
    model = helper.make_model(helper.make_graph(nodes, "io", inputs, outputs), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _features(lengths, seed=0):
    rng = np.random.default_rng(seed)
    n = len(lengths)
    mask = (np.arange(384)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(1, 30000, size=(n, 384)).astype(np.int32) * mask
    seg = (rng.integers(0, 2, size=(n, 384)).astype(np.int32)) * mask
    return ids, mask, seg, np.asarray(lengths, np.int32)


def _loaded(tmp_path, batch_size, **kwargs):
    backend = DeepSparseBackend(cache_dir=tmp_path / "cache", **kwargs)
    backend.load(_model(tmp_path), threads=2, batch_size=batch_size)
    return backend


def test_engines_per_bucket_compiled_once_and_outputs_scattered_back(tmp_path, fake_deepsparse, monkeypatch):
    monkeypatch.delenv("ORCH_DEEPSPARSE_EAGER", raising=False)
    backend = _loaded(tmp_path, batch_size=3)
    assert FakeEngine.created == []  # lazy: nothing compiled at load
    # Sorted by length and cut in threes: (7, 10, 64) -> 64, (65, 70, 200) -> 256, (384,) -> 384.
    lengths = [10, 384, 70, 64, 65, 200, 7]
    ids, mask, seg, lens = _features(lengths)
    out = predict(backend, ids, mask, seg, lens, batch_size=3)
    assert FakeEngine.created == [(3, 64), (3, 256), (3, 384)]
    real = np.arange(384)[None, :] < lens[:, None]
    np.testing.assert_array_equal(out[..., 0][real], (ids * mask)[real].astype(np.float32))
    np.testing.assert_array_equal(out[..., 1][real], (seg + mask)[real].astype(np.float32))
    assert (out[~real] == PAD_LOGIT).all()
    # A second pass reuses every engine.
    again = predict(backend, ids, mask, seg, lens, batch_size=3)
    assert len(FakeEngine.created) == 3
    np.testing.assert_array_equal(again, out)
    info = backend.device_info()
    assert info["engines"] == ["3x64", "3x256", "3x384"] and info["deepsparse"] == "0.0-fake"
    assert info["fixed_seq_length"] is None and info["num_cores"] == 2 and info["compile"] == "lazy"


def test_partial_batch_and_odd_width_are_padded_then_trimmed(tmp_path, fake_deepsparse):
    backend = _loaded(tmp_path, batch_size=4, eager=False)
    ids, mask, seg, _ = _features([100, 50, 90, 100, 30])
    # 5 rows of width 100: bucket 128, batches of 4 then 1 (padded to 4 by repeating the last row).
    start, end = backend.run(ids[:, :100].astype(np.int64), mask[:, :100].astype(np.int64), seg[:, :100].astype(np.int64))
    assert start.shape == end.shape == (5, 100) and start.dtype == np.float32
    assert FakeEngine.created == [(4, 128)]
    assert backend.engines[(4, 128)].batches == 2
    np.testing.assert_array_equal(start, (ids * mask)[:, :100])
    np.testing.assert_array_equal(end, (seg + mask)[:, :100])


def test_inputs_are_fed_in_the_model_graph_order(tmp_path, fake_deepsparse):
    backend = DeepSparseBackend(cache_dir=tmp_path / "cache")
    backend.load(_model(tmp_path, order=("segment_ids", "input_ids", "input_mask")), threads=1, batch_size=2)
    ids, mask, seg, _ = _features([20, 60])
    start, end = backend.run(ids[:, :64].astype(np.int64), mask[:, :64].astype(np.int64), seg[:, :64].astype(np.int64))
    np.testing.assert_array_equal(start, (ids * mask)[:, :64])
    np.testing.assert_array_equal(end, (seg + mask)[:, :64])


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_eager_compiles_every_bucket_at_load(tmp_path, fake_deepsparse, monkeypatch, how):
    if how == "environment":
        monkeypatch.setenv("ORCH_DEEPSPARSE_EAGER", "1")
        backend = _loaded(tmp_path, batch_size=2)
    else:
        monkeypatch.delenv("ORCH_DEEPSPARSE_EAGER", raising=False)
        backend = _loaded(tmp_path, batch_size=2, eager=True)
    assert FakeEngine.created == [(2, b) for b in BUCKETS]
    assert backend.device_info()["engines"] == [f"2x{b}" for b in BUCKETS]
    assert backend.device_info()["compile"] == "eager"
    # The prepared static models are cached: a new backend in a new process would find them.
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == len(BUCKETS)


def test_a_model_with_a_fixed_length_gets_one_engine_and_no_padding_removal(tmp_path, fake_deepsparse):
    backend = DeepSparseBackend(cache_dir=tmp_path / "cache", eager=True)
    backend.load(_model(tmp_path, seq=384), batch_size=2)
    assert backend.fixed_seq_length == 384 and backend.buckets() == (384,)
    assert FakeEngine.created == [(2, 384)]
    ids, mask, seg, lens = _features([30, 300, 5])
    with pytest.raises(ModelError, match="fixed sequence length of 384"):
        predict(backend, ids, mask, seg, lens, batch_size=2)
    out = predict(backend, ids, mask, seg, lens, batch_size=2, remove_padding=False)
    real = np.arange(384)[None, :] < lens[:, None]
    np.testing.assert_array_equal(out[..., 0][real], (ids * mask)[real].astype(np.float32))
    # Narrower batches are padded up to the fixed length.
    start, _ = backend.run(*(a[:, :64].astype(np.int64) for a in (ids, mask, seg)))
    assert start.shape == (3, 64) and FakeEngine.created == [(2, 384)]
    assert backend.device_info()["fixed_seq_length"] == 384
    with pytest.raises(ModelError, match="above 384"):
        DeepSparseBackend(cache_dir=tmp_path / "cache").load(_model(tmp_path, seq=512, name="long.onnx"), batch_size=1)


def test_a_model_without_the_bert_interface_is_refused(tmp_path, fake_deepsparse):
    with pytest.raises(ModelError, match=r"lacks the input\(s\) segment_ids"):
        DeepSparseBackend(cache_dir=tmp_path).load(_model(tmp_path, order=("input_ids", "input_mask")), batch_size=1)


def test_missing_model_and_bad_arguments(tmp_path, fake_deepsparse):
    with pytest.raises(ModelError, match="does not exist"):
        DeepSparseBackend().load(tmp_path / "nope.onnx")
    with pytest.raises(BackendError, match="threads must be >= 0"):
        DeepSparseBackend().load(_model(tmp_path), threads=-1)
    with pytest.raises(BackendError, match="batch size must be >= 1"):
        DeepSparseBackend().load(_model(tmp_path), batch_size=0)
    with pytest.raises(BackendError, match="before load"):
        DeepSparseBackend().run(*[np.zeros((1, 64), np.int64)] * 3)


def test_missing_deepsparse_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepsparse", None)  # makes `import deepsparse` raise ImportError
    backend = get_backend("deepsparse")  # the module itself imports without deepsparse
    with pytest.raises(BackendError) as info:
        backend.load(_model(tmp_path))
    message = str(info.value)
    assert "pip install 'orch[deepsparse]'" in message and "CPython <= 3.11" in message and "\n" not in message


def test_pad_batch():
    a = np.arange(6).reshape(2, 3)
    ids, = pad_batch([a], 3, 5)
    np.testing.assert_array_equal(ids, [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0], [3, 4, 5, 0, 0]])
    assert ids.dtype == np.int64 and ids.flags.c_contiguous
    with pytest.raises(ValueError):
        pad_batch([a], 1, 5)  # more rows than the engine's batch
    with pytest.raises(ValueError):
        pad_batch([a], 2, 2)  # wider than the bucket


def test_a_deepsparse_that_fails_inside_its_import_is_a_backend_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing(name, *args, **kwargs):
        if name == "deepsparse":
            raise RuntimeError("Neural Magic: unsupported instruction set\nmore text")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "deepsparse", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing)
    with pytest.raises(BackendError, match="RuntimeError: Neural Magic: unsupported instruction set") as info:
        DeepSparseBackend().load(_model(tmp_path))
    assert "\n" not in str(info.value) and "AVX2" in str(info.value)
