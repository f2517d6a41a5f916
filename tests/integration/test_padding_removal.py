"""Padding removal on the real demo model with ONNX Runtime: same logits, same answers."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.backends import get_backend
from orchestrator.backends.batching import MAX_SEQ_LENGTH, PAD_LOGIT, predict
from orchestrator.models.demo import demo_model_path


@pytest.fixture(scope="module")
def backend():
    backend = get_backend("onnxruntime")
    backend.load(demo_model_path(), threads=2, batch_size=4)
    return backend


def squad_like(lengths, seed=0):
    """Features shaped like SQuAD ones: [CLS] question [SEP] context [SEP], zero padding."""
    rng = np.random.default_rng(seed)
    n = len(lengths)
    lengths = np.asarray(lengths, np.int32)
    positions = np.arange(MAX_SEQ_LENGTH)[None, :]
    mask = (positions < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1996, 29000, size=(n, MAX_SEQ_LENGTH)).astype(np.int32)
    ids[:, 0] = 101
    ids[np.arange(n), lengths - 1] = 102
    ids[:, 11] = 102
    ids *= mask
    seg = ((positions >= 12) * mask).astype(np.int32)
    return ids, mask, seg, lengths


def test_trimmed_logits_and_answers_equal_padded(backend):
    # Lengths on both sides of every bucket boundary.
    lengths = [20, 64, 65, 96, 97, 128, 129, 192, 193, 256, 257, 320, 321, 384]
    ids, mask, seg, lengths = squad_like(lengths)
    trimmed = predict(backend, ids, mask, seg, lengths, batch_size=4)
    padded = predict(backend, ids, mask, seg, lengths, batch_size=4, remove_padding=False)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(trimmed[i, :n], padded[i, :n], atol=1e-4, rtol=1e-4)
        # The answer a SQuAD post-processor would pick (best start, best end) is unchanged.
        assert np.argmax(trimmed[i, :n, 0]) == np.argmax(padded[i, :n, 0])
        assert np.argmax(trimmed[i, :n, 1]) == np.argmax(padded[i, :n, 1])
        assert np.all(trimmed[i, n:] == PAD_LOGIT)
    assert np.abs(padded[:, :20]).max() > 0.05


def test_batch_of_one_equals_batch_of_many(backend):
    ids, mask, seg, lengths = squad_like([50, 150, 300], seed=3)
    one = predict(backend, ids, mask, seg, lengths, batch_size=1)
    many = predict(backend, ids, mask, seg, lengths, batch_size=8)
    np.testing.assert_allclose(one, many, atol=1e-4, rtol=1e-4)


def test_raw_backend_output_matches_predict(backend):
    ids, mask, seg, lengths = squad_like([100])
    start, end = backend.run(ids.astype(np.int64), mask.astype(np.int64), seg.astype(np.int64))
    out = predict(backend, ids, mask, seg, lengths, batch_size=1, remove_padding=False)
    np.testing.assert_allclose(out[0, :100, 0], start[0, :100], atol=1e-6)
    np.testing.assert_allclose(out[0, :100, 1], end[0, :100], atol=1e-6)
