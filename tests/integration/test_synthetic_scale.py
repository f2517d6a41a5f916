"""Large synthetic queries through the real driver: loadgen, the adaptive dispatcher, local Ray workers.

Exactly-once is checked on loadgen's own logs: with the test fault
``log_all_responses`` loadgen writes every completed sample (its
seq_id in the query and its QSL index) to mlperf_log_accuracy.json, and its
detail log states how many samples the query had.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.loadgen_log import read_detail
from tests.helpers.cli import orch as _orch


def orch(*args: str, timeout: int = 600, faults: dict | None = None):
    return _orch(*args, timeout=timeout, faults=faults)


def bench_json(*args: str, faults: dict | None = None) -> dict:
    proc = orch("bench", "--json", *args, faults=faults)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_200k_samples_on_4_workers_each_completed_exactly_once(tmp_path):
    query = 200_000
    result = bench_json(
        "--backend", "synthetic:rate=100000,overhead_ms=0.1", "--nodes", "4", "--count", str(query),
        "--batch-size", "64", "--out", str(tmp_path / "run"), faults={"log_all_responses": True},
    )  # fmt: skip
    run_dir = Path(result["run_dir"])
    values, errors = read_detail(run_dir / "mlperf_log_detail.txt")
    # Loadgen's own counts: one query of 200,000 samples over a QSL that is the data set, no error.
    assert values["generated_query_count"] == 1
    assert values["generated_samples_per_query"] == query
    assert values["qsl_reported_total_count"] == result["total_sample_count"] == result["count"]
    assert values["num_errors"] == 0 and errors == []
    assert "Ending naturally" in (run_dir / "mlperf_log_detail.txt").read_text()  # not stopped by a limit
    # Every issued sample completed exactly once, by loadgen's log of every completion.
    logged = json.loads((run_dir / "mlperf_log_accuracy.json").read_text())
    seq_ids = [entry["seq_id"] for entry in logged]
    assert len(seq_ids) == query and set(seq_ids) == set(range(query))
    assert all(0 <= entry["qsl_idx"] < result["count"] for entry in logged)
    # orch's side agrees: the four workers answered the query between them.
    assert result["issued_samples"] == query == sum(n["samples"] for n in result["per_node"])
    assert result["workers"] == 4 and len(result["per_node"]) == 1  # four workers of this one machine
    assert sorted(result["per_node"][0]["workers"]) == ["local-1", "local-2", "local-3", "local-4"]
    assert result["rerun_samples"] == 0 and result["lost_workers"] == []
    # Labelled synthetic, with the driver's own figures and the start-up apart from the run.
    assert result["synthetic"]["rate_per_worker"] == 100000.0 and "never a submission" in result["synthetic"]["note"]
    driver = result["driver"]
    assert driver["chunks"] >= 4 and driver["chunk_round_trip_ms"]["p50"] > 0
    assert driver["peak_rss_bytes"] > 0 and driver["cpu_seconds"] > 0
    assert 0 < result["startup"]["inputs_resolved"] <= result["startup"]["ray_started"] <= result["startup_seconds"]
    assert result["startup"]["ray"] == "embedded"


def test_duration_sizes_the_query_from_the_synthetic_model(tmp_path):
    result = bench_json("--backend", "synthetic:rate=20000", "--nodes", "2", "--duration", "2",
                        "--out", str(tmp_path / "run"))  # fmt: skip
    # 2 workers x 20,000/s x 1.1 x 2 s, loadgen's own sizing of an Offline query.
    assert result["issued_samples"] == pytest.approx(88_000, rel=0.01)
    assert result["count"] == result["total_sample_count"]
    conf = (Path(result["run_dir"]) / "user.conf").read_text()
    assert "bert.Offline.min_duration = 2000" in conf and "bert.Offline.target_qps = 40000" in conf
    assert result["result_valid"] is True  # the modelled workers kept the rate loadgen was told


def test_orch_up_keeps_ray_and_the_workers_between_runs(tmp_path):
    up = orch("up", "--json", timeout=180)
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    try:
        assert state["started"] is True and state["pid"] > 0
        again = orch("up", "--json")
        assert json.loads(again.stdout)["started"] is False
        args = ("--backend", "synthetic:rate=50000", "--nodes", "2", "--count", "20000")
        first = bench_json(*args, "--out", str(tmp_path / "one"))
        second = bench_json(*args, "--out", str(tmp_path / "two"))
        assert first["startup"]["ray"] == second["startup"]["ray"] == "orch up"
        assert first["startup"]["workers_reused"] == 0 and second["startup"]["workers_reused"] == 2
        assert second["issued_samples"] == 20000 == sum(n["samples"] for n in second["per_node"])
        # Another layout replaces the kept workers instead of adding to them.
        third = bench_json("--backend", "synthetic:rate=50000", "--nodes", "3", "--count", "20000",
                           "--out", str(tmp_path / "three"))  # fmt: skip
        assert third["startup"]["workers_reused"] == 0 and third["workers"] == 3
    finally:
        down = orch("down", "--json", timeout=120)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["stopped"]["pid"] == state["pid"]
    assert not Path(f"/proc/{state['pid']}").exists() or "Z" in Path(f"/proc/{state['pid']}/stat").read_text().split()[2]
    assert json.loads(orch("down", "--json").stdout)["stopped"] is None
    # With it down, a run starts its own Ray again.
    alone = bench_json("--backend", "synthetic:rate=50000", "--count", "5000", "--out", str(tmp_path / "alone"))
    assert alone["startup"]["ray"] == "embedded"


def test_a_calibration_probe_draws_its_query_from_the_whole_data_set(tmp_path, squad_part):
    """The query that calibrates a valid run is drawn by loadgen from every feature, not the first N.

    In a process of its own, as orch runs a calibration (loadgen reads one user.conf per process).
    """
    import subprocess
    import sys

    from tests.helpers.cli import ROOT

    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from orchestrator.bench.config import BenchConfig\n"
        "from orchestrator.bench.runner import run_bench\n"
        "from orchestrator.records import Faults\n"
        "conf = BenchConfig(backend='synthetic:rate=20000,overhead_ms=0.1', nodes=2, count=1024, whole_qsl=True,\n"
        "                   dataset=Path(sys.argv[1]), out=Path(sys.argv[2]))\n"
        "print(json.dumps(run_bench(conf, faults=Faults(log_all_responses=True)), default=str))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(squad_part), str(tmp_path / "probe")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    run_dir = Path(result["run_dir"])
    values, errors = read_detail(run_dir / "mlperf_log_detail.txt")
    assert values["generated_samples_per_query"] == 1024 and errors == []
    assert values["qsl_reported_total_count"] == result["total_sample_count"] == 5147
    drawn = [entry["qsl_idx"] for entry in json.loads((run_dir / "mlperf_log_accuracy.json").read_text())]
    assert len(drawn) == 1024 and max(drawn) >= 1024  # beyond the first 1,024: the whole QSL
    assert sum(i >= 2573 for i in drawn) > 300  # and both halves of it (uniform: ~512 each)
    assert "drew from the first" not in (result.get("calibration_stored") or "")  # not refused as a prefix
