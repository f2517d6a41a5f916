"""Padding removal and batching, with a numpy stand-in backend (no runtime needed)."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.backends.base import Backend
from orchestrator.backends.batching import BUCKETS, MAX_SEQ_LENGTH, PAD_LOGIT, bucket_length, predict
from orchestrator.errors import ModelError


class MaskedMeanBackend(Backend):
    """Logits that, like BERT's, depend only on real tokens: token id plus the mean of the real ids."""

    name = "fake"

    def __init__(self, fixed_seq_length=None):
        self.calls: list[tuple[int, int, np.dtype]] = []
        self.fixed_seq_length = fixed_seq_length

    def load(self, model_path, *, threads=None, batch_size=1):  # pragma: no cover - not used
        pass

    def run(self, input_ids, input_mask, segment_ids):
        self.calls.append((*input_ids.shape, input_ids.dtype))
        ids = input_ids.astype(np.float64)
        mean = (ids * input_mask).sum(1, keepdims=True) / input_mask.sum(1, keepdims=True)
        start = ids / 1000.0 + mean / 1e4
        # Padding positions get values a padded run would expose, to prove they are masked.
        end = segment_ids + np.arange(ids.shape[1])[None, :] * 0.01 + mean / 1e4
        return start.astype(np.float32), end.astype(np.float32)

    def device_info(self):  # pragma: no cover - not used
        return {}


def features(lengths, seed=0):
    rng = np.random.default_rng(seed)
    n = len(lengths)
    lengths = np.asarray(lengths, np.int32)
    mask = (np.arange(MAX_SEQ_LENGTH)[None, :] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1000, 30000, size=(n, MAX_SEQ_LENGTH)).astype(np.int32) * mask
    seg = (np.arange(MAX_SEQ_LENGTH)[None, :] >= 20).astype(np.int32) * mask
    return ids, mask, seg, lengths


@pytest.mark.parametrize(
    "n, expected",
    [(0, 64), (1, 64), (64, 64), (65, 96), (96, 96), (97, 128), (128, 128), (129, 192), (320, 320), (321, 384), (384, 384)],
)
def test_bucket_length_boundaries(n, expected):
    assert bucket_length(n) == expected


@pytest.mark.parametrize("n", [-1, 385])
def test_bucket_length_out_of_range(n):
    with pytest.raises(ValueError):
        bucket_length(n)


def test_buckets_are_sorted_and_end_at_384():
    assert list(BUCKETS) == sorted(BUCKETS) and BUCKETS[-1] == MAX_SEQ_LENGTH


@pytest.mark.parametrize("batch_size", [1, 3, 8, 13, 100])
def test_trimmed_equals_padded_on_real_positions(batch_size):
    lengths = [5, 64, 65, 96, 97, 128, 129, 200, 320, 321, 384, 40, 383]
    ids, mask, seg, lengths = features(lengths)
    trimmed_backend, padded_backend = MaskedMeanBackend(), MaskedMeanBackend()
    trimmed = predict(trimmed_backend, ids, mask, seg, lengths, batch_size=batch_size)
    padded = predict(padded_backend, ids, mask, seg, lengths, batch_size=batch_size, remove_padding=False)

    assert trimmed.shape == (len(lengths), MAX_SEQ_LENGTH, 2) and trimmed.dtype == np.float32
    np.testing.assert_allclose(trimmed, padded, rtol=1e-6, atol=1e-6)
    # Batches are cut to their longest real length and use int64; the padded run always uses 384.
    assert all(dtype == np.int64 for _, _, dtype in trimmed_backend.calls)
    order = sorted(lengths)
    expected_widths, first = [], 0
    for batch, _, _ in trimmed_backend.calls:
        expected_widths.append(max(order[first : first + batch]))
        first += batch
    assert [w for _, w, _ in trimmed_backend.calls] == expected_widths
    assert {width for _, width, _ in padded_backend.calls} == {MAX_SEQ_LENGTH}
    assert max(b for b, _, _ in trimmed_backend.calls) <= batch_size
    assert sum(b for b, _, _ in trimmed_backend.calls) == len(lengths)
    if batch_size == 1:
        assert [w for _, w, _ in trimmed_backend.calls] == sorted(int(n) for n in lengths)


def test_results_keep_the_input_order_and_mask_padding():
    ids, mask, seg, lengths = features([300, 10, 150, 70])
    out = predict(MaskedMeanBackend(), ids, mask, seg, lengths, batch_size=2)
    for i, n in enumerate(lengths):
        # Real positions: start = id / 1000 + mean(real ids) / 1e4 identifies the sample.
        expected = ids[i, :n] / 1000.0 + ids[i, :n].mean() / 1e4
        np.testing.assert_allclose(out[i, :n, 0], expected, rtol=1e-6)
        assert np.all(out[i, n:, :] == PAD_LOGIT)


def test_shorter_batches_do_less_work():
    ids, mask, seg, lengths = features([30] * 7 + [384])
    backend = MaskedMeanBackend()
    predict(backend, ids, mask, seg, lengths, batch_size=4)
    # Sorted by length: the seven short ones share a 30-token batch, only the long one pays 384.
    assert [(b, w) for b, w, _ in backend.calls] == [(4, 30), (4, 384)]


def test_empty_input():
    ids, mask, seg, lengths = features([])
    assert predict(MaskedMeanBackend(), ids, mask, seg, lengths, batch_size=4).shape == (0, MAX_SEQ_LENGTH, 2)


@pytest.mark.parametrize("batch_size", [0, -2])
def test_bad_batch_size(batch_size):
    ids, mask, seg, lengths = features([10])
    with pytest.raises(ValueError, match="batch_size"):
        predict(MaskedMeanBackend(), ids, mask, seg, lengths, batch_size=batch_size)


def test_lengths_must_match_the_mask():
    ids, mask, seg, lengths = features([10, 20])
    with pytest.raises(ValueError, match="input_mask"):
        predict(MaskedMeanBackend(), ids, mask, seg, lengths - 1, batch_size=2)


def test_wrong_width_is_refused():
    ids, mask, seg, lengths = features([10])
    with pytest.raises(ValueError, match="384"):
        predict(MaskedMeanBackend(), ids[:, :128], mask[:, :128], seg[:, :128], lengths, batch_size=1)


def test_fixed_length_model_refuses_padding_removal_but_runs_padded():
    ids, mask, seg, lengths = features([10, 20])
    backend = MaskedMeanBackend(fixed_seq_length=384)
    with pytest.raises(ModelError, match="fixed sequence length of 384"):
        predict(backend, ids, mask, seg, lengths, batch_size=2)
    assert predict(backend, ids, mask, seg, lengths, batch_size=2, remove_padding=False).shape == (2, 384, 2)
