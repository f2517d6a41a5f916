"""Complete, valid records for tests, with any field changed."""

from __future__ import annotations

from typing import Any


def run_record(**changes: Any):
    """A ``RunRecord`` of a small test-mode performance run, with ``changes`` applied."""
    from orchestrator.records import RunRecord, TargetQps

    base = dict(
        orch_version="0", command="orch bench", scenario="Offline", mode="performance", execution="test",
        backend="onnxruntime", backends=["onnxruntime"], model="demo", model_path="/m", vocab_path="/v",
        dataset_path="/d", dataset_sha256="d", features_key="k", total_sample_count=58, count=58,
        target_qps=TargetQps(value=52.0, source="test-sizing"), samples_per_second=50.0,
        samples_per_second_source="loadgen", result_valid=True, invalid_reasons=[], loadgen_errors=[], system="h",
        nodes=1, workers=1, per_node=[], lost_workers=[], rerun_samples=0, issued_samples=58, startup_seconds=1.0,
        dispatch_seconds=1.2, started_at="2026-12-01T00:00:00+00:00", finished_at="2026-12-01T00:00:02+00:00",
    )
    return RunRecord(**{**base, **changes})
