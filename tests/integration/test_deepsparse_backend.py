"""The demo model through deepsparse and onnxruntime on the demo data: same logits, same EM/F1.

Skipped with the reason where deepsparse cannot be imported (the main
development venv has numpy 2, which deepsparse 1.8 does not support). Run it
in an ``orch[deepsparse]`` environment:

    /work/venv-ds/bin/python -m pytest tests/integration/test_deepsparse_backend.py

The Docker tier runs the same comparison inside the ``cpu-deepsparse`` image
(tests/integration/test_deepsparse_image.py).
"""

from __future__ import annotations

from orchestrator.fileio import sha256_file

import os

import numpy as np
import pytest

from orchestrator.backends import get_backend
from orchestrator.backends.batching import predict

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
deepsparse = pytest.importorskip("deepsparse", reason="deepsparse is not importable here (pip install 'orch[deepsparse]', CPython <= 3.11, numpy < 2)")

# Observed differences are ~1e-6; a wrong mask, bucket or row shows up as O(0.1) and more.
ATOL = 1e-3


@pytest.fixture(scope="module")
def demo():
    from orchestrator.models.demo import demo_dataset_path, demo_model_path, demo_vocab_path
    from orchestrator.squad.library import load_features

    return demo_model_path(), load_features(demo_dataset_path(), demo_vocab_path())


def _logits(backend_name: str, model_path, features, batch_size: int) -> tuple[np.ndarray, dict]:
    backend = get_backend(backend_name)
    backend.load(model_path, threads=2, batch_size=batch_size)
    out = predict(backend, features.input_ids, features.input_mask, features.segment_ids, features.lengths, batch_size=batch_size)
    return out, backend.device_info()


@pytest.mark.parametrize("batch_size", [4])
def test_deepsparse_matches_onnxruntime_on_the_demo(demo, batch_size):
    from orchestrator.squad.accuracy import score_logits

    model_path, features = demo
    sha_before = sha256_file(model_path)
    reference, _ = _logits("onnxruntime", model_path, features, batch_size)
    got, info = _logits("deepsparse", model_path, features, batch_size)
    assert len(features) % batch_size != 0  # the last batch is a partial one, padded by the backend

    real = np.arange(got.shape[1])[None, :] < features.lengths[:, None]
    diff = np.abs(got - reference)[real]
    assert diff.max() < ATOL, f"max |deepsparse - onnxruntime| on real positions is {diff.max():.2e}"
    np.testing.assert_array_equal(got[~real], reference[~real])  # both PAD_LOGIT

    ours = score_logits(features, {i: got[i] for i in range(len(features))})
    theirs = score_logits(features, {i: reference[i] for i in range(len(features))})
    assert ours == theirs
    assert ours.features_answered == ours.features_total == len(features)

    # The whole graph ran on deepsparse's optimized path (the LayerNorm/GELU rewrites worked).
    assert info["fraction_of_supported_ops"] == 1.0
    assert info["deepsparse"].startswith("1.8")
    assert len(info["engines"]) >= 2  # more than one length bucket was used
    # deepsparse never rewrote the model file it was given.
    assert sha256_file(model_path) == sha_before


def test_a_sparse_model_given_by_path_matches_onnxruntime(demo, tmp_path):
    import onnx

    from orchestrator.backends.deepsparse_graph import load_model, magnitude_prune

    model_path, features = demo
    model = load_model(model_path)
    assert magnitude_prune(model, 0.8) > 0
    sparse = tmp_path / "demo-sparse80.onnx"
    onnx.save_model(model, str(sparse))
    subset = slice(0, 12)
    ids, mask, seg, lengths = (a[subset] for a in (features.input_ids, features.input_mask, features.segment_ids, features.lengths))
    outs = {}
    for name in ("onnxruntime", "deepsparse"):
        backend = get_backend(name)
        backend.load(sparse, threads=2, batch_size=5)
        outs[name] = predict(backend, ids, mask, seg, lengths, batch_size=5)
    real = np.arange(384)[None, :] < lengths[:, None]
    assert np.abs(outs["deepsparse"] - outs["onnxruntime"])[real].max() < ATOL


def test_orch_bench_runs_the_deepsparse_backend_locally(demo, tmp_path):
    """`orch bench --backend deepsparse --mode accuracy` (one local node): complete, scored like onnxruntime."""
    from orchestrator.bench.config import BenchConfig
    from orchestrator.bench.runner import run_bench
    from orchestrator.squad.accuracy import score_logits

    model_path, features = demo
    conf = BenchConfig(nodes=1, backend="deepsparse", mode="accuracy", execution="test", model="demo", batch_size=4, threads=2,
                       out=tmp_path / "run")
    result = run_bench(conf)
    assert result["record"] == "run" and result["backend"] == "deepsparse" and result["count"] == len(features)
    assert (tmp_path / "run" / "run.json").is_file()
    assert [node["backend"] for node in result["per_node"]] == ["deepsparse"]
    assert result["per_node"][0]["samples"] == len(features)
    reference, _ = _logits("onnxruntime", model_path, features, 4)
    expected = score_logits(features, {i: reference[i] for i in range(len(features))})
    assert result["accuracy"]["exact_match"] == expected.exact_match and result["accuracy"]["f1"] == expected.f1
