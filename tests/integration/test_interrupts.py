"""Ctrl-C and SIGTERM stop `orch bench` in order: exit 130/143, a failed folder, no run.json, no Ray left.

Each run starts in a process group of its own, with Ray's temp dir of its
own; the signal goes to the whole group, as a terminal's Ctrl-C does (or to
orch alone, as `kill` does). After it: the exit code, the failed folder
named in the one error line, no run.json anywhere, and no process of the
run's Ray left (none in the process group, none naming its temp dir).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.signals import interruptible

ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, *args: str, faults: dict | None = None) -> tuple[subprocess.Popen, Path]:
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.helpers.orch_with_faults", json.dumps(faults or {}), *args]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=interruptible)
    return proc, ray_tmp


def _wait_for(path_glob: tuple[Path, str], proc: subprocess.Popen, limit: float = 240) -> None:
    folder, pattern = path_glob
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if list(folder.glob(pattern)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"orch ended before {pattern} appeared: {proc.communicate()}")
        time.sleep(0.2)
    raise AssertionError(f"{pattern} did not appear in {folder}")


def _processes_left(pgid: int, ray_tmp: Path) -> list[str]:
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, pgrp = fields[0], int(fields[2])
        if state == "Z":
            continue
        if pgrp == pgid or str(ray_tmp) in cmdline:
            left.append(f"{entry.name}: {cmdline[:120]}")
    return left


def _stop(proc: subprocess.Popen, sig: int, *, group: bool = True) -> tuple[int, str, float]:
    started = time.monotonic()
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr, time.monotonic() - started


def _check_stopped(proc, ray_tmp, tmp_path, code, stderr, expected_code, out_name):
    assert code == expected_code, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("orch: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    failed = sorted(tmp_path.glob(f"{out_name}.failed-*"))
    assert len(failed) == 1 and str(failed[0]) in errors[0], (errors, list(tmp_path.iterdir()))
    assert not (tmp_path / out_name).exists()
    assert not list(failed[0].rglob("run.json"))
    marker = json.loads((failed[0] / ".orch-run.json").read_text())
    assert marker["state"] == "failed" and marker["reason"]
    # Ray and its workers are gone: give the OS a moment to reap them.
    deadline = time.monotonic() + 15
    while _processes_left(proc.pid, ray_tmp) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_left(proc.pid, ray_tmp) == []
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return failed[0]


def test_ctrl_c_during_the_loadgen_run(tmp_path):
    proc, ray_tmp = _start(tmp_path, "bench", "--nodes", "2", "--chunk-size", "2", "--out", "run",
                           faults={"chunk_delay": 1.0})
    _wait_for((tmp_path, ".run.partial/mlperf_log_detail.txt"), proc)
    time.sleep(2)
    code, stderr, seconds = _stop(proc, signal.SIGINT)
    failed = _check_stopped(proc, ray_tmp, tmp_path, code, stderr, 130, "run")
    # Loadgen was let finish its query, so its logs are there for a look.
    assert (failed / "mlperf_log_summary.txt").is_file()
    assert "interrupted" in (failed / "FAILED.txt").read_text()
    print(f"stopped {seconds:.1f} s after Ctrl-C")


def test_sigterm_to_orch_alone_during_the_loadgen_run(tmp_path):
    proc, ray_tmp = _start(tmp_path, "bench", "--chunk-size", "2", "--out", "run", faults={"chunk_delay": 1.0})
    _wait_for((tmp_path, ".run.partial/mlperf_log_detail.txt"), proc)
    code, stderr, seconds = _stop(proc, signal.SIGTERM, group=False)
    _check_stopped(proc, ray_tmp, tmp_path, code, stderr, 143, "run")
    assert "SIGTERM" in stderr
    print(f"stopped {seconds:.1f} s after SIGTERM")


def test_ctrl_c_during_start_up(tmp_path):
    proc, ray_tmp = _start(tmp_path, "bench", "--nodes", "2", "--out", "run")
    _wait_for((tmp_path, ".run.partial"), proc)
    time.sleep(1.0)  # Ray is starting
    code, stderr, seconds = _stop(proc, signal.SIGINT)
    _check_stopped(proc, ray_tmp, tmp_path, code, stderr, 130, "run")
    print(f"stopped {seconds:.1f} s after Ctrl-C")


@pytest.mark.parametrize("sig, code, group", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_interrupt_in_submission_mode(tmp_path, sig, code, group):
    proc, ray_tmp = _start(tmp_path, "bench", "--mode", "submission", "--submitter", "T", "--chunk-size", "2",
                           "--out", "sub", faults={"chunk_delay": 1.0})
    _wait_for((tmp_path, ".sub.partial/accuracy/mlperf_log_detail.txt"), proc)
    got, stderr, seconds = _stop(proc, sig, group=group)
    failed = _check_stopped(proc, ray_tmp, tmp_path, got, stderr, code, "sub")
    assert (failed / "accuracy" / "mlperf_log_detail.txt").is_file()
    assert not (failed / "submission").exists()
    print(f"stopped {seconds:.1f} s after {signal.Signals(sig).name}")
