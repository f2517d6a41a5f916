"""Bench flags checked before anything starts, and the user.conf they produce (golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.bench import config as cfg
from orchestrator.errors import InputError


def test_user_conf_test_mode_golden():
    assert cfg.user_conf(execution="test", count=44, target_qps=39.6) == (
        "# user.conf written by orch\n"
        "# TEST MODE: a short run on a subset; NOT valid for an MLPerf submission.\n"
        "bert.Offline.target_qps = 39.6\n"
        "bert.Offline.min_duration = 1000\n"
        "bert.Offline.min_query_count = 44\n"
        "bert.Offline.performance_sample_count_override = 44\n"
    )


def test_user_conf_valid_mode_leaves_official_rules_untouched():
    text = cfg.user_conf(execution="valid", count=10833, target_qps=123.456789)
    assert text == "# user.conf written by orch\nbert.Offline.target_qps = 123.457\n"


def test_test_target_qps_keeps_query_at_count():
    for count in (1, 10, 44, 1000):
        qps = cfg.test_target_qps(count)
        assert 1.1 * qps * cfg.TEST_MIN_DURATION_MS / 1000 <= max(count, 1.1)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"nodes": 0}, "--nodes"),
        ({"scenario": "Server"}, "--scenario"),
        ({"count": 0}, "--count"),
        ({"count": 5, "execution": "valid"}, "--count"),
        ({"count": 5, "mode": "accuracy"}, "--partial-accuracy"),
        ({"partial_accuracy": True, "mode": "performance", "count": 5}, "--partial-accuracy"),
        ({"partial_accuracy": True, "mode": "accuracy"}, "--count"),
        ({"batch_size": 0}, "--batch-size"),
        ({"threads": 0}, "--threads"),
        ({"chunk_size": 0}, "--chunk-size"),
        ({"target_qps": -1.0}, "--target-qps"),
        ({"division": "network"}, "--division"),
        ({"mode": "submission"}, "--submitter"),
        ({"mode": "submission", "submitter": "my team"}, "--submitter"),
        ({"mode": "submission", "submitter": "T", "system_name": "a/b"}, "--system-name"),
        ({"mode": "submission", "submitter": "T", "division": "closed"}, "--division closed"),
        ({"allow_invalid": True}, "--allow-invalid"),
        ({"backend": "auto"}, "--backend auto"),
    ],
)
def test_bad_flags_name_the_flag(kwargs, flag):
    with pytest.raises(InputError, match=flag):
        cfg.check(cfg.BenchConfig(**kwargs))


def test_mode_and_execution_are_typed():
    from pydantic import ValidationError

    for kwargs in ({"mode": "fast"}, {"execution": "quick"}):
        with pytest.raises(ValidationError):
            cfg.BenchConfig(**kwargs)


def test_sample_count():
    data = Path("/d.json")
    count = cfg.sample_count
    assert count(cfg.BenchConfig(), 44, dataset=data, mode="performance") == 44
    assert count(cfg.BenchConfig(), 10833, dataset=data, mode="performance") == cfg.TEST_DEFAULT_COUNT_CAP
    assert count(cfg.BenchConfig(count=10), 44, dataset=data, mode="performance") == 10
    assert count(cfg.BenchConfig(execution="valid"), 10833, dataset=data, mode="performance") == 10833
    # Performance: a query larger than the data set repeats samples; the QSL stays the data set.
    big = cfg.BenchConfig(count=45)
    assert count(big, 44, dataset=data, mode="performance") == 44 and cfg.query_count(big, 44, "performance") == 45
    assert cfg.query_count(cfg.BenchConfig(count=10), 10, "performance") == 10
    assert count(cfg.BenchConfig(duration=5.0), 44, dataset=data, mode="performance") == 44
    assert cfg.query_count(cfg.BenchConfig(duration=5.0), 44, "performance") is None
    # Accuracy answers each QSL sample once: more than the data set is refused.
    partial = cfg.BenchConfig(count=45, mode="accuracy", partial_accuracy=True)
    with pytest.raises(InputError, match="--count 45 is larger than the data set /d.json"):
        count(partial, 44, dataset=data, mode="accuracy")


def test_a_calibration_query_is_drawn_from_the_whole_data_set():
    data = Path("/d.json")
    probe = cfg.BenchConfig(count=1024, whole_qsl=True)
    assert cfg.sample_count(probe, 10833, dataset=data, mode="performance") == 10833
    assert cfg.query_count(probe, 10833, "performance") == 1024
    text = cfg.user_conf(execution="test", count=10833, target_qps=1000.0, query_count=1024)
    assert "min_query_count = 1024\n" in text and "performance_sample_count_override = 10833\n" in text


def test_a_run_on_a_prefix_of_the_data_set_is_no_calibration(tmp_path, monkeypatch):
    from orchestrator.bench import calibration
    from orchestrator.records import Layout

    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path))
    layout = Layout(backend="onnxruntime", model_sha256="0" * 64, precision="fp32", nodes=2, workers_per_node=1,
                    threads=None, batch_size=8, chunk_size=None)
    steady = dict(samples_per_second=24.9, samples=1200, seconds=48.2, source="test run", load_before=0.1, cpus=2)
    cal, said = calibration.store("vm", layout, "k", qsl_samples=1200, total=10833, **steady)
    assert cal is None and calibration.load("vm", layout, "k") is None
    assert "first 1,200 of the data set's 10,833 features" in said
    cal, said = calibration.store("vm", layout, "k", qsl_samples=10833, total=10833, **steady)
    assert cal is not None and cal.qsl_samples == 10833 and calibration.load("vm", layout, "k") == cal


def test_user_conf_query_beyond_the_qsl_and_duration_golden():
    assert cfg.user_conf(execution="test", count=5147, target_qps=1800000.0, query_count=2000000) == (
        "# user.conf written by orch\n"
        "# TEST MODE: a short run on a subset; NOT valid for an MLPerf submission.\n"
        "bert.Offline.target_qps = 1.8e+06\n"
        "bert.Offline.min_duration = 1000\n"
        "bert.Offline.min_query_count = 2000000\n"
        "bert.Offline.performance_sample_count_override = 5147\n"
    )
    text = cfg.user_conf(execution="test", count=58, target_qps=1000.0, duration=30)
    assert "bert.Offline.min_duration = 30000\n" in text and "min_query_count = 58\n" in text


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"duration": 0.0}, "--duration must be a positive"),
        ({"duration": 5.0, "execution": "valid"}, "--duration is for --execution test"),
        ({"duration": 5.0, "mode": "accuracy"}, "--duration is for"),
        ({"duration": 5.0, "count": 100}, "without --count"),
        ({"backend": "synthetic:rate=0"}, "rate must be a positive"),
        ({"backend": "synthetic:speed=3"}, "'speed=3' is not one of"),
        ({"backend": "synthetic", "mode": "submission", "submitter": "T"}, "never a submission"),
    ],
)
def test_duration_and_synthetic_flags_checked(kwargs, needle):
    from orchestrator.errors import OrchError

    with pytest.raises(OrchError, match=needle):
        cfg.check(cfg.BenchConfig(**kwargs))


def test_accuracy_always_covers_the_whole_data_set_unless_partial_is_asked():
    data = Path("/d.json")
    count = cfg.sample_count
    # The test-mode --count default (1024) never cuts an accuracy run.
    assert count(cfg.BenchConfig(mode="accuracy"), 1077, dataset=data, mode="accuracy") == 1077
    # In submission mode --count sizes the performance part only.
    sub = cfg.BenchConfig(mode="submission", submitter="T", count=100)
    assert count(sub, 1077, dataset=data, mode="accuracy") == 1077
    assert count(sub, 1077, dataset=data, mode="performance") == 100
    partial = cfg.BenchConfig(mode="accuracy", count=100, partial_accuracy=True)
    cfg.check(partial)
    assert count(partial, 1077, dataset=data, mode="accuracy") == 100


def test_valid_run_without_target_qps_calibrates_first_with_a_long_enough_run(monkeypatch, tmp_path):
    from orchestrator.bench import calibration, runner
    from orchestrator.bench.inputs import Inputs
    from orchestrator.bench.placement import Placement
    from orchestrator.records import RunJob

    seen = []

    class Answer:
        samples_per_second = 42.0
        calibration_stored = "not kept as a calibration: test"

    def fake_child(job, live):
        seen.append(job)
        return Answer()

    monkeypatch.setattr(runner, "_in_child", fake_child)
    inputs = Inputs("demo", Path("/m"), Path("/v"), Path("/d"), None, None, total=5000, features_key="k",
                    dataset_sha256="d", model_sha256="m")
    conf = cfg.BenchConfig(nodes=2, execution="valid", mode="submission", submitter="T")
    job = RunJob(conf=conf, mode="performance", run_dir=str(tmp_path))
    target = runner._valid_target(job, inputs, Placement(conf), None)
    (probe,) = seen
    assert (probe.conf.mode, probe.conf.execution, probe.conf.nodes) == ("performance", "test", 2)
    assert probe.conf.count >= calibration.MIN_SAMPLES
    # Not kept (the fake said so), so it is used once and said so; with the margin that errs long.
    assert target.source == "calibration" and target.value == pytest.approx(42.0 * calibration.MARGIN)
    assert "not kept" in target.detail


def _record(**changes):
    from orchestrator.records import RunRecord, TargetQps

    base = dict(
        orch_version="0", command="orch bench", scenario="Offline", mode="performance", execution="valid",
        backend="onnxruntime", backends=["onnxruntime"], model="demo", model_path="/m", vocab_path="/v",
        dataset_path="/d", dataset_sha256="d", features_key="k", total_sample_count=10833, count=10833,
        target_qps=TargetQps(value=10.0, source="calibration"), samples_per_second=50.0, samples_per_second_source="loadgen",
        result_valid=False, invalid_reasons=["Min duration satisfied"], loadgen_errors=[], system="h", nodes=1,
        workers=1, per_node=[], lost_workers=[], rerun_samples=0, issued_samples=10833, startup_seconds=1.0,
        dispatch_seconds=216.0, started_at="t", finished_at="t",
    )
    return RunRecord(**{**base, **changes})


def _valid_job(tmp_path, **conf):
    from orchestrator.records import RunJob

    top = tmp_path / ".run.partial"
    top.mkdir()
    (top / ".orch-run.json").write_text("{}")
    return RunJob(conf=cfg.BenchConfig(execution="valid", target_qps=10.0, **conf), mode="performance", run_dir=str(top))


def test_a_valid_run_too_short_for_600_s_is_run_again_once_sized_from_what_it_measured(monkeypatch, tmp_path):
    from orchestrator.bench import calibration, runner

    jobs = []

    def fake_child(job, live):
        jobs.append(job)
        (Path(job.run_dir) / "mlperf_log_summary.txt").write_text(f"attempt {len(jobs)}\n")
        if len(jobs) == 1:
            return _record()
        return _record(result_valid=True, invalid_reasons=[], rerun=job.rerun, target_qps=job.target)

    monkeypatch.setattr(runner, "_in_child", fake_child)
    job = _valid_job(tmp_path)
    record = runner._valid_performance(job, None, None, None, Path(job.run_dir))
    assert len(jobs) == 2 and record.result_valid is True
    again = jobs[1]
    assert again.conf.is_rerun and again.target.source == "rerun"
    assert again.target.value == pytest.approx(50.0 * calibration.MARGIN)
    assert record.rerun.first_target_qps == 10.0 and record.rerun.first_result == "INVALID (min duration satisfied: no)"
    # The first attempt is kept, whole, beside the new one.
    first = Path(job.run_dir) / "first-attempt"
    assert (first / "mlperf_log_summary.txt").read_text() == "attempt 1\n"
    assert (Path(job.run_dir) / "mlperf_log_summary.txt").read_text() == "attempt 2\n"
    assert (Path(job.run_dir) / ".orch-run.json").is_file()
    # Said relative to the run's folder: still true after .run.partial is renamed to run.
    assert record.rerun.first_run_dir == "first-attempt"


@pytest.mark.parametrize("changes", [
    {"result_valid": True, "invalid_reasons": []},
    {"invalid_reasons": ["Min duration satisfied", "Early stopping satisfied"]},  # not only a sizing problem
])
def test_a_valid_run_is_not_run_again_for_what_a_larger_query_cannot_fix(monkeypatch, tmp_path, changes):
    from orchestrator.bench import runner

    jobs = []
    monkeypatch.setattr(runner, "_in_child", lambda job, live: jobs.append(job) or _record(**changes))
    job = _valid_job(tmp_path)
    runner._valid_performance(job, None, None, None, Path(job.run_dir))
    assert len(jobs) == 1
