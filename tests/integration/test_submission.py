"""orch submit end to end on run directories made by REAL mlperf_loadgen runs.

The runs come from ``tests/helpers/loadgen_runs.py`` (a child process runs
loadgen Offline with a deterministic fake SUT); each test copies what it
changes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.errors import InputError, SubmissionError
from orchestrator.submission import assemble
from orchestrator.submission.system_desc import load_system_meta
from orchestrator.submission import runs as runs_mod
from orchestrator.submission.system_desc import MEASUREMENT_KEYS, REQUIRED_KEYS
from tests.helpers.loadgen_runs import TEST_USER_CONF, VALID_SHORT_USER_CONF, copy_run, make_run_dir

# The checker's bert pattern (ACC_PATTERN["F1"]) and hash pattern.
F1_PATTERN = r"^{[\"\']exact_match[\"\']\:\s*[\d\.]+,\s*[\"\']f1[\"\']\:\s*([\d\.]+)}"
OFFLINE = Path("results/sys1/bert-99/Offline")


@pytest.fixture(scope="module")
def lg(tmp_path_factory):
    """Real loadgen run directories, made once for this module."""
    base = tmp_path_factory.mktemp("runs")
    return {
        "perf": make_run_dir(base / "perf", mode="performance"),
        "acc": make_run_dir(base / "acc", mode="accuracy", exact_match=41.2345, f1=55.6789),
        "perf_ok": make_run_dir(
            base / "perf_ok", mode="performance", user_conf=VALID_SHORT_USER_CONF, delay_s=0.2, execution="valid"
        ),
        "acc_ok": make_run_dir(base / "acc_ok", mode="accuracy", execution="valid"),
        "perf_error": make_run_dir(base / "perf_error", mode="performance", conf_twice=True),
    }


def _run_json(path: Path) -> dict:
    return json.loads((path / "run.json").read_text())


def _edit_run_json(path: Path, **changes) -> None:
    data = _run_json(path)
    data.update(changes)
    (path / "run.json").write_text(json.dumps(data))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_partial_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_loadgen_really_says_invalid_for_a_test_run_and_valid_for_the_slow_one(lg):
    assert "Result is : INVALID" in (lg["perf"] / "mlperf_log_summary.txt").read_text()
    assert "Min duration satisfied : NO" in (lg["perf"] / "mlperf_log_summary.txt").read_text()
    assert "Result is : VALID" in (lg["perf_ok"] / "mlperf_log_summary.txt").read_text()
    assert '"key": "error_invalid_config"' in (lg["perf_error"] / "mlperf_log_detail.txt").read_text()


def test_tree_has_every_file_and_field_the_layout_requires(lg, tmp_path):
    out = tmp_path / "out"
    result = assemble([lg["acc"], lg["perf"]], out=out, submitter="Acme", system_name="sys1", allow_invalid=True, command="orch submit A B")
    sub = out / "open" / "Acme"
    assert result.submitter_dir == sub and result.tree_root == out / "open"
    res = sub / OFFLINE
    expected = {
        "systems/sys1.json", "src/README.md",
        f"{OFFLINE}/README.md", f"{OFFLINE}/user.conf", f"{OFFLINE}/measurements.json",
        f"{OFFLINE}/performance/run_1/mlperf_log_summary.txt", f"{OFFLINE}/performance/run_1/mlperf_log_detail.txt",
        f"{OFFLINE}/accuracy/mlperf_log_summary.txt", f"{OFFLINE}/accuracy/mlperf_log_detail.txt",
        f"{OFFLINE}/accuracy/mlperf_log_accuracy.json", f"{OFFLINE}/accuracy/accuracy.txt",
    }  # fmt: skip
    files = {str(p.relative_to(sub)) for p in sub.rglob("*") if p.is_file()}
    assert files == expected
    for name in expected:
        assert (sub / name).stat().st_size > 0, name

    system = json.loads((sub / "systems/sys1.json").read_text())
    assert list(system) == list(REQUIRED_KEYS)
    assert all(isinstance(v, str) and v.strip() for v in system.values())
    assert (system["division"], system["submitter"], system["system_name"]) == ("open", "Acme", "sys1")
    assert system["number_of_nodes"] == "1" and system["accelerators_per_node"] == "0"
    assert system["status"] in ("available", "preview", "rdi")
    assert system["system_type"] in ("datacenter", "edge", "datacenter,edge")

    measurements = json.loads((res / "measurements.json").read_text())
    assert set(measurements) == set(MEASUREMENT_KEYS) and all(measurements.values())

    # user.conf: byte-for-byte the one the performance run used.
    assert (res / "user.conf").read_text() == TEST_USER_CONF == (lg["perf"] / "user.conf").read_text()
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        assert (res / "performance/run_1" / name).read_bytes() == (lg["perf"] / name).read_bytes()
        assert (res / "accuracy" / name).read_bytes() == (lg["acc"] / name).read_bytes()

    # accuracy.txt: the EM/F1 line the checker parses, then the hash of the FULL log.
    full = lg["acc"] / "mlperf_log_accuracy.json"
    lines = (res / "accuracy/accuracy.txt").read_text().splitlines()
    assert re.match(F1_PATTERN, lines[0]).group(1) == "55.6789"
    assert json.loads(lines[0]) == {"exact_match": 41.2345, "f1": 55.6789}
    assert lines[1] == f"hash={_sha256(full)}"
    assert result.full_accuracy_log.read_bytes() == full.read_bytes()
    assert not result.full_accuracy_log.is_relative_to(out / "open")

    # Truncated the reference way: first and last 4 KiB.
    original = full.read_bytes()
    assert len(original) > 10 * 1024
    truncated = (res / "accuracy/mlperf_log_accuracy.json").read_bytes()
    assert truncated == original[:4096] + b"\n\n...\n\n" + original[-4096:]
    assert len(truncated) <= 10 * 1024

    # Tarball: exactly the open/ tree.
    with tarfile.open(out / "mlperf_submission.tar.gz") as tar:
        members = {m.name for m in tar.getmembers() if m.isfile()}
    assert members == {f"open/Acme/{f}" for f in expected}

    row = next(csv.DictReader((out / "summary.csv").open()))
    assert row["submitter"] == "Acme" and row["division"] == "open" and row["system"] == "sys1"
    assert (row["model"], row["scenario"], row["units"]) == ("bert-99", "Offline", "Samples/s")
    summary_line = next(l for l in (lg["perf"] / "mlperf_log_summary.txt").read_text().splitlines() if l.startswith("Samples per second"))
    assert float(row["result"]) == pytest.approx(float(summary_line.split(":")[1]))
    assert row["accuracy"] == "EM=41.234 F1=55.679"
    assert row["nodes"] == "1" and row["framework"].startswith("ONNX Runtime") and row["device"].startswith("CPU")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"][0]["system"] == "sys1"

    src = (sub / "src/README.md").read_text()
    assert _run_json(lg["perf"])["command"] in src and _run_json(lg["acc"])["command"] in src and "orch submit A B" in src
    assert _no_partial_left(tmp_path)


def test_allow_invalid_marks_the_result_everywhere(lg, tmp_path):
    out = tmp_path / "out"
    result = assemble([lg["perf"], lg["acc"]], out=out, submitter="Acme", system_name="sys1", allow_invalid=True)
    assert result.valid is False
    assert any("Result is : INVALID" in r for r in result.invalid_reasons)
    assert any("execution is 'test'" in r for r in result.invalid_reasons)
    assert "NOT A VALID MLPERF RESULT" in (out / "open/Acme" / OFFLINE / "README.md").read_text()
    assert "NOT A VALID MLPERF RESULT" in (out / "open/Acme/src/README.md").read_text()
    row = next(csv.DictReader((out / "summary.csv").open()))
    assert row["valid"] == "False" and row["notes"].startswith("INVALID: ") and "Result is : INVALID" in row["notes"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid"] is False and summary["invalid_reasons"] == result.invalid_reasons


def test_valid_runs_pass_without_allow_invalid_when_they_meet_the_rules(lg, tmp_path, monkeypatch):
    # The official minimums (600 s, 10833 samples) cannot be met in a test;
    # lowering them to what these runs did exercises the valid path itself.
    monkeypatch.setattr(runs_mod, "OFFICIAL_MIN_DURATION_MS", 100)
    monkeypatch.setattr(runs_mod, "OFFICIAL_PERFORMANCE_SAMPLE_COUNT", 20)
    monkeypatch.setattr(runs_mod, "OFFICIAL_DATASET_SIZE", 20)
    result = assemble([lg["perf_ok"], lg["acc_ok"]], out=tmp_path / "out", submitter="Acme", system_name="sys1")
    assert result.valid is True and result.invalid_reasons == []
    assert "NOT A VALID" not in (result.submitter_dir / OFFLINE / "README.md").read_text()
    assert next(csv.DictReader(result.summary_csv.open()))["valid"] == "True"


def test_the_same_valid_runs_fail_the_official_minimums(lg, tmp_path):
    with pytest.raises(SubmissionError) as err:
        assemble([lg["perf_ok"], lg["acc_ok"]], out=tmp_path / "out", submitter="Acme", system_name="sys1")
    message = str(err.value)
    assert "min_duration 100 ms < 600000 ms" in message and "performance_sample_count 20 < 10833" in message
    assert "Result is" not in message  # loadgen itself said VALID


def test_invalid_performance_run_is_refused_and_nothing_is_written(lg, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SubmissionError) as err:
        assemble([lg["perf"], lg["acc"]], out=out, submitter="Acme", system_name="sys1")
    assert "Result is : INVALID" in str(err.value) and "--allow-invalid" in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists() and _no_partial_left(tmp_path)


def test_loadgen_error_is_refused_even_with_allow_invalid(lg, tmp_path):
    with pytest.raises(SubmissionError, match="error_invalid_config"):
        assemble([lg["perf_error"], lg["acc"]], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)


@pytest.fixture(scope="module")
def acc_part(tmp_path_factory):
    """A real accuracy run on 12 samples of a 20-sample library (loadgen's QSL holds the 12)."""
    path = make_run_dir(tmp_path_factory.mktemp("part") / "acc", mode="accuracy", total=12)
    _edit_run_json(path, total_sample_count=20)
    return path


def test_accuracy_run_on_part_of_the_library_is_refused_unless_allowed_and_marked(lg, acc_part, tmp_path):
    with pytest.raises(SubmissionError, match="the accuracy run used 12 of 20 samples"):
        assemble([lg["perf"], acc_part], out=tmp_path / "out", submitter="Acme", system_name="sys1")
    result = assemble([lg["perf"], acc_part], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)
    assert any("used 12 of 20 samples" in r for r in result.invalid_reasons)
    assert "used 12 of 20 samples" in (result.submitter_dir / OFFLINE / "README.md").read_text()


def test_accuracy_run_json_count_that_loadgen_did_not_run_is_refused(lg, tmp_path):
    acc = copy_run(lg["acc"], tmp_path / "acc")
    _edit_run_json(acc, count=10)
    with pytest.raises(SubmissionError, match="loadgen's QSL had 20 samples, run.json says 10"):
        assemble([lg["perf"], acc], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)


def test_accuracy_log_with_missing_answers_is_refused(lg, tmp_path):
    acc = copy_run(lg["acc"], tmp_path / "acc")
    log = acc / "mlperf_log_accuracy.json"
    entries = json.loads(log.read_text())
    log.write_text(json.dumps([e for e in entries if e["qsl_idx"] not in (3, 7)]))
    with pytest.raises(SubmissionError, match="2 of the 20 samples run have no logged answer"):
        assemble([lg["perf"], acc], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"model": "bert-large"}, "model differs"),
        ({"features_key": "e" * 64}, "features_key differs"),
        ({"workers": 3}, "workers differs"),
        ({"backend": "deepsparse"}, "backend differs"),
    ],
)
def test_runs_that_disagree_are_refused(lg, tmp_path, change, expected):
    acc = copy_run(lg["acc"], tmp_path / "acc")
    _edit_run_json(acc, **change)
    with pytest.raises(SubmissionError, match=expected):
        assemble([lg["perf"], acc], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)


def test_runs_on_different_systems_are_refused(lg, tmp_path):
    acc = copy_run(lg["acc"], tmp_path / "acc")
    data = _run_json(acc)
    data["per_node"][0]["facts"]["hostname"] = "some-other-host"
    (acc / "run.json").write_text(json.dumps(data))
    with pytest.raises(SubmissionError, match="different systems"):
        assemble([lg["perf"], acc], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)


def test_run_without_run_json_is_refused_as_incomplete(lg, tmp_path):
    perf = copy_run(lg["perf"], tmp_path / "perf")
    (perf / "run.json").unlink()
    with pytest.raises(SubmissionError, match="no run.json, so the run is incomplete"):
        assemble([perf, lg["acc"]], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)


def test_two_performance_runs_and_no_accuracy_run_are_refused(lg, tmp_path):
    with pytest.raises(SubmissionError, match="exactly one performance run"):
        assemble([lg["perf"], lg["perf_ok"]], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)


def test_a_folder_orch_did_not_make_is_never_replaced_even_with_force(lg, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    for force in (False, True):
        with pytest.raises(InputError, match="is not empty and is not an orch run directory; nothing in it was touched"):
            assemble([lg["perf"], lg["acc"]], out=out, submitter="Acme", system_name="sys1", allow_invalid=True, force=force)
        assert (out / "precious.txt").read_text() == "mine"


def test_an_earlier_submission_is_kept_unless_force(lg, tmp_path):
    out = tmp_path / "out"
    first = assemble([lg["perf"], lg["acc"]], out=out, submitter="Acme", system_name="sys1", allow_invalid=True)
    before = first.tarball.read_bytes()
    with pytest.raises(InputError, match="already holds an earlier run.*--force"):
        assemble([lg["perf"], lg["acc"]], out=out, submitter="Acme", system_name="sys1", allow_invalid=True)
    assert first.tarball.read_bytes() == before
    result = assemble([lg["perf"], lg["acc"]], out=out, submitter="Acme", system_name="sys1", allow_invalid=True, force=True)
    assert result.tarball.is_file() and (out / ".orch-run.json").is_file()
    assert _no_partial_left(tmp_path)


def test_a_failure_while_building_leaves_no_tree(lg, tmp_path, monkeypatch):
    from orchestrator.submission import tree as tree_mod

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tree_mod.tarfile, "open", broken)
    with pytest.raises(OSError, match="disk full"):
        assemble([lg["perf"], lg["acc"]], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True)
    assert not (tmp_path / "out").exists() and _no_partial_left(tmp_path)


def test_closed_division_is_refused(lg, tmp_path):
    with pytest.raises(SubmissionError, match="TEST01"):
        assemble([lg["perf"], lg["acc"]], out=tmp_path / "out", submitter="Acme", system_name="sys1", division="closed")


def test_system_meta_overrides_and_refuses_unknown_keys(lg, tmp_path):
    meta = tmp_path / "meta.yaml"
    meta.write_text("cooling: air\nstatus: preview\nmeasurements:\n  retraining: 'no, never'\n")
    result = assemble([lg["perf"], lg["acc"]], out=tmp_path / "out", submitter="Acme", system_name="sys1", allow_invalid=True,
                      system_meta=load_system_meta(meta))
    system = json.loads(result.system_json.read_text())
    assert system["cooling"] == "air" and system["status"] == "preview"
    assert json.loads((result.submitter_dir / OFFLINE / "measurements.json").read_text())["retraining"] == "no, never"
    meta.write_text("coolant: water\n")
    with pytest.raises(InputError, match=r"meta.yaml: unknown key coolant"):
        load_system_meta(meta)


def test_cli_exit_codes_and_one_line_errors(lg, tmp_path, capsys):
    args = ["submit", str(lg["perf"]), str(lg["acc"]), "--submitter", "Acme", "--system-name", "sys1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orch: error: not a valid MLPerf result") and err.count("\n") == 1

    assert main([*args, "--out", str(tmp_path / "b"), "--allow-invalid"]) == 0
    printed = capsys.readouterr().out
    assert "NOT A VALID MLPERF RESULT" in printed and "mlperf_submission.tar.gz" in printed
    assert (tmp_path / "b/mlperf_submission.tar.gz").is_file()
    assert "orch submit" in (tmp_path / "b/open/Acme/src/README.md").read_text()

    assert main([*args, "--out", str(tmp_path / "b"), "--allow-invalid"]) == 2
    assert "already holds an earlier run" in capsys.readouterr().err

    assert main([*args, "--out", str(tmp_path / "c"), "--division", "closed"]) == 2
    assert "TEST01" in capsys.readouterr().err

    meta = tmp_path / "m.yaml"
    meta.write_text("division: closed\n")
    assert main([*args, "--out", str(tmp_path / "d"), "--allow-invalid", "--system-meta", str(meta)]) == 2
    err = capsys.readouterr().err
    assert "m.yaml" in err and "division" in err and err.count("\n") == 1


def test_force_never_deletes_the_runs_it_packages(lg, tmp_path):
    out = tmp_path / "out"
    perf, acc = copy_run(lg["perf"], out / "perf"), copy_run(lg["acc"], out / "acc")
    with pytest.raises(SubmissionError, match="contains the run directory"):
        assemble([perf, acc], out=out, submitter="Acme", system_name="sys1", allow_invalid=True, force=True)
    assert (perf / "run.json").is_file() and (acc / "run.json").is_file()


def test_two_different_nodes_are_described_truthfully(tmp_path):
    from orchestrator.facts import collect_facts

    here = collect_facts()
    other = {**here, "hostname": "node-b", "cpu_model": "Other CPU 9000", "sockets": 2,
             "accelerators": [{"model": "NVIDIA H100 80GB HBM3", "memory_bytes": 80 * 2**30}]}  # fmt: skip
    perf = make_run_dir(tmp_path / "perf", mode="performance", facts=[here, other])
    acc = make_run_dir(tmp_path / "acc", mode="accuracy", facts=[here, other])
    result = assemble([perf, acc], out=tmp_path / "out", submitter="Acme", system_name="two", allow_invalid=True)
    system = json.loads(result.system_json.read_text())
    assert system["number_of_nodes"] == "2"
    assert "Other CPU 9000 (1 node)" in system["host_processor_model_name"]
    assert f"{here['cpu_model']} (1 node)" in system["host_processor_model_name"]
    assert system["accelerator_model_name"] == "NVIDIA H100 80GB HBM3 (1 node) + none (1 node)"
    assert "node2 (node-b): 2x Other CPU 9000" in system["hw_notes"] and f"node1 ({here['hostname']})" in system["hw_notes"]
    assert result.rows[0]["nodes"] == 2
    assert oct(result.out.stat().st_mode & 0o777) == "0o755"
