"""The driver's own figures in run.json, the ceiling warning before a run, and their rows in the results table."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from orchestrator.bench import driver_stats
from orchestrator.bench.dispatcher import DispatchReport
from orchestrator.bench.harness import HarnessResult


def _outcome(issued: int, completion_cpu: float) -> HarnessResult:
    return HarnessResult(report=None, issued=issued, error=None, loadgen_seconds=4.0, cpu_seconds=5.0,
                         completion_cpu_seconds=completion_cpu, peak_rss_bytes=700 << 20)  # fmt: skip


def test_driver_record_per_million_and_round_trip_percentiles():
    report = DispatchReport(workers={}, lost_workers=[], rerun_samples=0, wall_seconds=4.0,
                            round_trip_seconds=[i / 1000 for i in range(1, 101)])  # fmt: skip
    record = driver_stats.driver_record(_outcome(2_000_000, 2.5), report)
    assert record["cpu_seconds_per_million_samples"] == 2.5
    # From the whole driver process's CPU time (5 s), not the completion thread's (2.5 s): the thread
    # alone overstated what the driver completes (docs/scaling.md).
    assert record["ceiling_estimate_samples_per_second"] == 400_000.0
    assert record["chunks"] == 100
    assert record["chunk_round_trip_ms"] == {"p50": 51.0, "p90": 91.0, "p99": 100.0, "max": 100.0}
    assert record["peak_rss_bytes"] == 700 << 20 and record["ceiling_warning"] is None
    assert driver_stats.percentiles_ms([]) is None


def test_a_planned_rate_above_the_stored_ceiling_is_said_before_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path))  # no ceiling stored by other tests
    assert driver_stats.ceiling_warning(5e6) is None  # nothing measured yet: nothing to compare with
    report = DispatchReport(workers={}, lost_workers=[], rerun_samples=0, wall_seconds=1.0)
    small = driver_stats.driver_record(_outcome(50_000, 0.05), report)
    driver_stats.store_ceiling(small, samples=50_000, command="orch bench --count 50000")
    assert driver_stats.stored_ceiling() is None  # too short a run to tell the driver's ceiling
    record = driver_stats.driver_record(_outcome(2_000_000, 2.0), report)
    driver_stats.store_ceiling(record, samples=2_000_000, command="orch bench --count 2000000")
    assert driver_stats.stored_ceiling()["samples_per_second"] == 400_000.0
    assert driver_stats.ceiling_warning(390_000) is None
    warning = driver_stats.ceiling_warning(1_520_000)
    assert "1,520,000 samples/s exceeds" in warning and "about 400,000 samples/s" in warning
    assert "bound by the driver" in warning and "docs/scaling.md" in warning


def test_startup_marks_count_from_the_process_start():
    if shutil.which("ps") is None:
        pytest.skip("ps (procps) gives the independent process age this test compares with")
    startup = driver_stats.Startup()
    # The test process may have started long ago (the whole suite runs in it): compare with
    # the process age ps reports (whole seconds), not with "a moment ago".
    age = int(subprocess.run(["ps", "-o", "etimes=", "-p", str(os.getpid())], capture_output=True, text=True, check=True).stdout)
    assert abs(startup.origin - (time.time() - age)) < 2.0
    assert startup.origin <= time.time()
    startup.mark("ray_started")
    startup.ray, startup.workers_reused = "orch up", 2
    marks = startup.as_dict()
    assert marks["ray"] == "orch up" and marks["workers_reused"] == 2
    assert 0 < marks["ray_started"] == pytest.approx(time.time() - startup.origin, abs=1.0)  # seconds since the process start


def test_results_table_labels_synthetic_runs_and_shows_start_up():
    from rich.console import Console

    from orchestrator.backends.synthetic import parse_spec
    from orchestrator.bench.view import results_table

    run = {
        "mode": "performance", "execution": "test", "samples_per_second": 123456.0, "samples_per_second_source": "loadgen",
        "result_valid": True, "invalid_reasons": [], "backend": "synthetic:rate=25000", "model": "demo",
        "per_node": [{"name": "local-1", "backend": "synthetic:rate=25000", "samples": 10, "seconds": 1.0}],
        "run_dir": "/tmp/x", "synthetic": parse_spec("synthetic:rate=25000").as_dict(),
        "startup_seconds": 1.84, "startup": {"ray": "orch up"},
    }  # fmt: skip
    console = Console(width=200, record=True)
    console.print(results_table(run))
    text = console.export_text()
    assert "SYNTHETIC" in text and "never a submission" in text and "25,000 samples/s per worker" in text
    assert "1.84 s before loadgen started (orch up)" in text


@pytest.mark.parametrize("name", ["synthetic", "synthetic:rate=9500,per_node=8"])
def test_a_cluster_places_per_node_synthetic_workers(monkeypatch, name):
    import sys
    import types

    from orchestrator.bench import cluster

    fake_ray = types.SimpleNamespace(nodes=lambda: [
        {"NodeManagerAddress": "10.0.0.2", "Alive": True, "NodeID": "n1", "Resources": {"CPU": 4.0}},
        {"NodeManagerAddress": "10.0.0.3", "Alive": True, "NodeID": "n2", "Resources": {"CPU": 4.0}},
    ])  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    from orchestrator.records import DeployedNode, DeployRecord

    deploy = DeployRecord(cluster="c", node="node1", head="node1", model="demo", model_path="/m", vocab_path="/v",
                          dataset_path="/d", cache_dir="/c", ray_address="10.0.0.2:6379",
                          nodes=[DeployedNode(name="node1", ray_ip="10.0.0.2", profile="cpu-onnxruntime"),
                                 DeployedNode(name="node2", ray_ip="10.0.0.3", profile="cpu-deepsparse")])
    slots = cluster.deployed_slots(deploy, ["node1", "node2"], name, None)
    per_node = 8 if "per_node=8" in name else 1
    assert len(slots) == 2 * per_node and all(s.num_gpus == 0 for s in slots)
    assert {s.node for s in slots} == {"node1", "node2"} and len({s.worker for s in slots}) == len(slots)
    assert all(s.num_cpus == pytest.approx(4.0 / per_node) for s in slots)


def test_peak_rss_is_the_process_own_not_the_parent_peak_that_ru_maxrss_keeps(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 9000000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t   10000 kB\n")
    assert driver_stats.peak_rss_bytes(str(status)) == 12345 * 1024
    # Where /proc is absent: getrusage's figure.
    assert driver_stats.peak_rss_bytes(str(tmp_path / "absent")) > 0
    if not os.path.exists("/proc/self/status"):
        return
    # A child of a process with a large peak: ru_maxrss reports the parent's peak, VmHWM its own.
    import sys

    ballast = bytearray(200 << 20)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: resident
    code = "from orchestrator.bench.driver_stats import peak_rss_bytes; print(peak_rss_bytes())"
    own = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del ballast
    assert own < 150 << 20  # the child's own peak (tens of MB); ru_maxrss said 200 MB and more here
