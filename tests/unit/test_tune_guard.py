"""The accuracy guard: bert-99 / bert-99.9 against the model's own measured fp32 F1; unknown or below is refused."""

from __future__ import annotations

import pytest

from orchestrator.tune import guard


def _target(cache, precision, sha, f1, *, source="fp32sha", features="feat", count=100):
    return guard.accuracy_target(
        precision=precision, model_sha256=sha, source_sha256=source, features_key=features, count=count,
        f1=f1, exact_match=f1 / 2, examples_scored=90, cache_dir=cache,
    )  # fmt: skip


def test_targets_follow_the_share_of_the_fp32_f1(tmp_path):
    assert _target(tmp_path, "fp32", "fp32sha", 40.0)["meets"] == "bert-99.9"
    assert _target(tmp_path, "int8-dynamic", "int8sha", 39.99)["meets"] == "bert-99.9"  # 99.975%
    near = _target(tmp_path, "int8-dynamic", "int8sha", 39.7)  # 99.25%
    assert near["meets"] == "bert-99" and near["reference_f1"] == 40.0 and "meets bert-99" in near["reason"]
    low = _target(tmp_path, "int8-static", "qdqsha", 39.5)  # 98.75%
    assert low["meets"] is None and "below bert-99" in low["reason"]


def test_no_reference_on_the_same_samples_means_unknown(tmp_path):
    _target(tmp_path, "fp32", "fp32sha", 40.0, count=100)
    other_count = _target(tmp_path, "int8-dynamic", "int8sha", 40.0, count=200)
    other_data = _target(tmp_path, "int8-dynamic", "int8sha", 40.0, features="other")
    other_model = _target(tmp_path, "int8-dynamic", "int8sha", 40.0, source="another-model")
    for verdict in (other_count, other_data, other_model):
        assert verdict["meets"] is None and verdict["reason"].startswith("unknown")


def test_a_reduced_run_is_stored_but_never_becomes_the_reference(tmp_path):
    _target(tmp_path, "int8-dynamic", "int8sha", 10.0)
    assert guard.load_accuracy(guard.AccuracyKey("int8sha", "feat", 100), cache_dir=tmp_path)["f1"] == 10.0
    assert guard.load_accuracy(guard.AccuracyKey("fp32sha", "feat", 100), cache_dir=tmp_path) is None


def test_submission_is_refused_unless_the_target_is_met(tmp_path):
    _target(tmp_path, "fp32", "fp32sha", 40.0)
    ok = {"precision": "int8-dynamic", "accuracy_target": _target(tmp_path, "int8-dynamic", "i", 39.9)}
    degraded = {"precision": "int8-dynamic", "accuracy_target": _target(tmp_path, "int8-dynamic", "i", 20.0)}
    unknown = {"precision": "int8-static", "accuracy_target": _target(tmp_path, "int8-static", "s", 40.0, count=7)}
    assert guard.submission_faults(ok) == []
    assert guard.submission_faults({"precision": "fp32"}) == [] and guard.submission_faults({}) == []
    with pytest.raises(guard.GuardError) as err:
        guard.check_submittable(degraded)
    assert "precision int8-dynamic: F1 20.000 is 50.00% of the fp32 F1 40.000: below bert-99" in str(err.value)
    assert guard.GuardError.exit_code == 2
    with pytest.raises(guard.GuardError, match="unknown: no fp32 accuracy"):
        guard.check_submittable(unknown)
    with pytest.raises(guard.GuardError, match="int8-dynamic"):
        guard.check_submittable({"precision": "int8-dynamic"})  # a run.json with no verdict at all


def test_a_damaged_record_counts_as_none(tmp_path):
    key = guard.AccuracyKey("fp32sha", "feat", 100)
    (tmp_path / key.filename()).write_text("{not json")
    assert guard.load_accuracy(key, cache_dir=tmp_path) is None
