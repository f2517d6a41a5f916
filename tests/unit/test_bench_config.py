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
        ({"mode": "fast"}, "--mode"),
        ({"execution": "quick"}, "--execution"),
        ({"count": 0}, "--count"),
        ({"count": 5, "execution": "valid"}, "--count"),
        ({"batch_size": 0}, "--batch-size"),
        ({"threads": 0}, "--threads"),
        ({"target_qps": -1.0}, "--target-qps"),
    ],
)
def test_bad_flags_name_the_flag(kwargs, flag):
    with pytest.raises(InputError, match=flag):
        cfg.BenchConfig(**kwargs).check()


def test_sample_count():
    data = Path("/d.json")
    assert cfg.BenchConfig().sample_count(44, dataset=data) == 44
    assert cfg.BenchConfig().sample_count(10833, dataset=data) == cfg.TEST_DEFAULT_COUNT_CAP
    assert cfg.BenchConfig(count=10).sample_count(44, dataset=data) == 10
    assert cfg.BenchConfig(execution="valid").sample_count(10833, dataset=data) == 10833
    # Performance: a query larger than the data set repeats samples; the QSL stays the data set.
    big = cfg.BenchConfig(count=45)
    assert big.sample_count(44, dataset=data) == 44 and big.query_count(44) == 45
    assert cfg.BenchConfig(count=10).query_count(10) == 10
    assert cfg.BenchConfig(duration=5.0).sample_count(44, dataset=data) == 44
    assert cfg.BenchConfig(duration=5.0).query_count(44) is None
    # Accuracy answers each QSL sample once: more than the data set is refused.
    with pytest.raises(InputError, match="--count 45 is larger than the data set /d.json"):
        cfg.BenchConfig(count=45, mode="accuracy").sample_count(44, dataset=data)


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
        cfg.BenchConfig(**kwargs).check()


def test_calibration_round_trip():
    key = cfg.calibration_key("host/1", "onnxruntime", "demo", 2, 8)
    assert "/" not in key
    assert cfg.load_calibration(key) is None
    cfg.store_calibration(key, 12.5, samples=100)
    assert cfg.load_calibration(key) == 12.5


def test_valid_run_without_target_qps_calibrates_first(monkeypatch, tmp_path):
    from orchestrator.bench import runner

    seen = []

    def fake_child(conf, *, debug, live):
        seen.append(conf)
        return {"samples_per_second": 42.0}

    monkeypatch.setattr(runner, "_run_in_child", fake_child)
    inputs = runner.Inputs("demo", Path("/m"), Path("/v"), Path("/d"), None, None, total=5000)
    runner._calibrate(cfg.BenchConfig(nodes=2, execution="valid", mode="submission", submitter="T"), inputs,
                      debug=False, live=None)
    (probe,) = seen
    assert (probe.mode, probe.execution, probe.count, probe.force, probe.nodes) == (
        "performance", "test", cfg.CALIBRATION_COUNT, True, 2)
