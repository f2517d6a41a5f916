"""What the results view suggests next."""

from __future__ import annotations


def test_after_a_test_run_the_valid_submission_is_estimated_from_the_measured_rate():
    from orchestrator.bench.view import next_steps

    steps = next_steps({"mode": "performance", "execution": "test", "samples_per_second": 24.9, "total_sample_count": 10833})
    # 10,833 / 24.9 = 435 s of accuracy, then ~660 s of performance: ~18 minutes.
    assert "about 18 minutes or more: 10,833 features at the 24.9 samples/s measured here" in steps[1]
    unknown = next_steps({"mode": "performance", "execution": "test"})
    assert "minutes" not in unknown[1] and "600 s or more" in unknown[1]
