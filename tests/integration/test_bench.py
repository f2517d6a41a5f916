"""`orch bench` for real: Ray embedded here, real loadgen, real onnxruntime, the demo model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.squad.accuracy import read_accuracy_log
from tests.helpers.cli import orch, orch_json


def bench_json(*args: str, **kwargs) -> dict:
    return orch_json("bench", *args, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Performance and accuracy runs with 1 and 3 nodes (shared by the tests below)."""
    base = tmp_path_factory.mktemp("bench")
    out = {}
    for nodes in (1, 3):
        for mode in ("performance", "accuracy"):
            out[(mode, nodes)] = bench_json("--nodes", str(nodes), "--mode", mode, "--out", str(base / f"{mode}-{nodes}"))
    return out


@pytest.mark.parametrize("nodes", [1, 3])
def test_performance_run(runs, nodes):
    result = runs[("performance", nodes)]
    run_dir = Path(result["run_dir"])
    for name in ("user.conf", "mlperf_log_summary.txt", "mlperf_log_detail.txt", "run.json"):
        assert (run_dir / name).is_file(), name
    assert result["mode"] == "performance" and result["execution"] == "test"
    assert len(result["per_node"]) == 1 and len(result["per_node"][0]["workers"]) == nodes
    assert result["samples_per_second"] > 0 and result["samples_per_second_source"] == "loadgen"
    assert isinstance(result["result_valid"], bool)
    # Every issued sample was answered by some node, exactly once.
    assert sum(n["samples"] for n in result["per_node"]) == result["issued_samples"] == result["count"]
    assert all(n["samples"] > 0 for n in result["per_node"]), result["per_node"]
    assert result["startup_seconds"] > 0 and result["target_qps"]["source"] == "test-sizing"
    for key in ("model_path", "vocab_path", "dataset_path", "run_dir"):
        assert Path(result[key]).is_absolute() and Path(result[key]).exists(), key
    assert result["backend"] == "onnxruntime" and result["model"] == "demo"
    assert "TEST MODE" in (run_dir / "user.conf").read_text()
    on_disk = json.loads((run_dir / "run.json").read_text())
    assert on_disk["record"] == "run" and on_disk["version"] == 1
    assert {k: v for k, v in result.items() if k not in ("run_dir", "report")} == {k: v for k, v in on_disk.items() if k != "per_node"} | {
        "per_node": [{k: v for k, v in n.items() if k != "facts"} for n in on_disk["per_node"]]}
    assert result["workers"] == nodes and result["nodes"] == 1  # local workers share one machine


def test_accuracy_identical_between_1_and_3_nodes(runs):
    one, three = runs[("accuracy", 1)], runs[("accuracy", 3)]
    assert one["accuracy"]["f1"] is not None and one["accuracy"]["exact_match"] is not None
    assert one["accuracy"]["partial"] is False and one["count"] == one["total_sample_count"]
    assert (one["accuracy"]["exact_match"], one["accuracy"]["f1"]) == (three["accuracy"]["exact_match"], three["accuracy"]["f1"])
    # Per-sample answers too, not only the totals.
    log1 = read_accuracy_log(Path(one["run_dir"]) / "mlperf_log_accuracy.json")
    log3 = read_accuracy_log(Path(three["run_dir"]) / "mlperf_log_accuracy.json")
    assert sorted(log1) == sorted(log3) == list(range(one["count"]))
    for idx in log1:
        assert (log1[idx].argmax(0) == log3[idx].argmax(0)).all()
    text = (Path(one["run_dir"]) / "accuracy.txt").read_text().splitlines()
    assert text[0].startswith('{"exact_match": ') and text[1].startswith("hash=")


def test_worker_killed_mid_run_completes_with_every_sample_once(tmp_path):
    # local-2 SIGKILLs itself when asked for its second chunk.
    result = bench_json(
        "--nodes", "3", "--mode", "accuracy", "--chunk-size", "4", "--out", str(tmp_path / "run"),
        faults={"kill_worker_after": {"local-2": 1}},
    )
    assert [a["name"] for a in result["lost_workers"]] == ["local-2"]
    assert result["rerun_samples"] > 0
    assert sum(n["samples"] for n in result["per_node"]) == result["count"]
    log = read_accuracy_log(Path(result["run_dir"]) / "mlperf_log_accuracy.json")
    assert sorted(log) == list(range(result["count"]))
    raw = json.loads((Path(result["run_dir"]) / "mlperf_log_accuracy.json").read_text())
    assert len(raw) == result["count"]  # each sample answered exactly once


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--nodes", "0"], "--nodes must be at least 1"),
        # Performance mode takes a query larger than the data set (samples repeat); accuracy does not.
        (["--mode", "accuracy", "--partial-accuracy", "--count", "100000"], "--count 100000 is larger than the data set"),
        (["--backend", "tensorflow"], "unknown backend 'tensorflow'"),
        (["--dataset", "/nonexistent/squad.json"], "/nonexistent/squad.json"),
        (["--ray-address", "127.0.0.1:1"], "Ray failed to start at 127.0.0.1:1"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, args, needle):
    proc = orch("bench", "--out", str(tmp_path / "run"), *args, timeout=180)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("orch: error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_bad_files_one_line_exit_2(tmp_path):
    from orchestrator.models.demo import demo_dataset_path, demo_vocab_path

    (tmp_path / "notsquad.json").write_text('{"data": 5}')
    (tmp_path / "vocab.txt").write_text("hello\nworld\n")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x01not an onnx model" * 40)
    demo = ["--vocab", str(demo_vocab_path()), "--dataset", str(demo_dataset_path())]
    cases = [
        (["--dataset", str(tmp_path / "notsquad.json")], "notsquad.json is not SQuAD v1.1"),
        (["--vocab", str(tmp_path / "vocab.txt")], "vocab.txt is not a BERT WordPiece vocab"),
        (["--model", str(tmp_path / "bad.onnx"), *demo], str(tmp_path / "bad.onnx") + " is not an ONNX model"),
    ]
    for args, needle in cases:
        proc = orch("bench", "--out", str(tmp_path / "run"), *args, timeout=180)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("orch: error:")]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_earlier_run_refused_without_force(runs):
    run_dir = runs[("performance", 1)]["run_dir"]
    before = Path(run_dir, "run.json").read_text()
    proc = orch("bench", "--out", run_dir)
    assert proc.returncode == 2
    assert "already holds an earlier run" in proc.stderr and "--force" in proc.stderr
    assert Path(run_dir, "run.json").read_text() == before


def test_valid_accuracy_run_leaves_official_rules_untouched(tmp_path):
    result = bench_json("--execution", "valid", "--mode", "accuracy", "--out", str(tmp_path / "run"))
    conf = (tmp_path / "run" / "user.conf").read_text().splitlines()
    assert [line for line in conf if not line.startswith("#")] == [conf[-1]]
    assert conf[-1].startswith("bert.Offline.target_qps = ")
    assert result["execution"] == "valid" and result["count"] == result["total_sample_count"]
    detail = (tmp_path / "run" / "mlperf_log_detail.txt").read_text()
    assert '"key": "effective_min_duration_ms", "value": 600000' in detail


def test_submission_mode_builds_a_tree_from_real_demo_runs(tmp_path):
    import hashlib
    import tarfile

    out = tmp_path / "sub"
    result = bench_json("--nodes", "2", "--mode", "submission", "--submitter", "SCCTeam", "--system-name", "laptop2",
                        "--out", str(out))
    assert [r["mode"] for r in result["runs"]] == ["accuracy", "performance"]
    root = out / "submission" / "open" / "SCCTeam"
    system = json.loads((root / "systems" / "laptop2.json").read_text())
    # Two workers on this one machine are one node of hardware.
    assert system["number_of_nodes"] == "1" and system["submitter"] == "SCCTeam" and system["division"] == "open"
    assert "local-1+local-2" in system["hw_notes"]
    offline = root / "results" / "laptop2" / "bert-99" / "Offline"
    lines = (offline / "accuracy" / "accuracy.txt").read_text().splitlines()
    full_log = (out / "accuracy" / "mlperf_log_accuracy.json").read_bytes()
    assert lines[0].startswith('{"exact_match": ') and lines[1] == "hash=" + hashlib.sha256(full_log).hexdigest()
    assert (offline / "accuracy" / "mlperf_log_accuracy.json").stat().st_size <= 10 * 1024
    assert (offline / "user.conf").read_text() == (out / "performance" / "user.conf").read_text()
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        assert (offline / "performance" / "run_1" / name).read_bytes() == (out / "performance" / name).read_bytes()
    # Each loadgen run had its own process: no "Multiple conf files" error in either log.
    for mode in ("accuracy", "performance"):
        assert "Multiple conf files" not in (out / mode / "mlperf_log_detail.txt").read_text()
    with tarfile.open(result["submission"]["tarball"]) as tar:
        assert "open/SCCTeam/systems/laptop2.json" in tar.getnames()
    assert result["submission"]["valid"] is False  # test mode: let through, marked
    # The folder orch bench printed is what orch submit takes, with the command it printed.
    import shlex

    command = shlex.split(result["submission"]["submit_command"])
    assert command[:3] == ["orch", "submit", str(out)] and "--allow-invalid" in command
    again = orch(*command[1:])
    assert again.returncode == 0, again.stderr
    assert (out / "submission" / "mlperf_submission.tar.gz").is_file()
    proc = orch("bench", "--mode", "submission", "--submitter", "SCCTeam", "--out", str(out))
    assert proc.returncode == 2 and "already holds an earlier run" in proc.stderr
