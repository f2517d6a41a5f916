"""Real ``mlperf_loadgen`` runs for tests: run directories per the run-directory contract.

Each loadgen run happens in its own Python process (``python -m
tests.helpers.loadgen_runs``) because loadgen keeps process-wide state: a
second ``FromConfig`` in one process logs "Multiple conf files are used",
and a crash must not take pytest down with it.

The SUT answers every sample with a deterministic (384, 2) float32 array
from ONE long-lived completion thread (loadgen 6.0.17 crashed when
``QuerySamplesComplete`` was called from many short-lived threads), and the
response buffers stay alive until ``QuerySamplesComplete`` returns.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# A test-mode run: Offline issues ONE query of 1.1 x min_duration x target_qps
# = 11 samples, answered in far less than min_duration, so loadgen says
# "Result is : INVALID" (min duration not satisfied) every time.
TEST_USER_CONF = """\
# orch test run: tiny, far below the MLPerf minimums
*.Offline.target_qps = 10
*.Offline.min_duration = 1000
*.Offline.min_query_count = 1
*.Offline.performance_sample_count_override = 20
"""

# Lowered minimums that the run meets (with ``delay_s`` > 0.1): loadgen says
# VALID; the official checker would still reject min_duration < 600000 ms.
VALID_SHORT_USER_CONF = """\
*.Offline.target_qps = 100
*.Offline.min_duration = 100
*.Offline.min_query_count = 1
*.Offline.performance_sample_count_override = 20
"""

LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json", "mlperf_log_trace.json")


def answer_for(index: int) -> "Any":
    """The deterministic (384, 2) float32 answer for QSL sample ``index``."""
    import numpy as np

    rng = np.random.default_rng(index)
    return rng.standard_normal((384, 2)).astype(np.float32)


def _serve(
    out_dir: Path, mode: str, total: int, user_conf: Path, *, conf_twice: bool = False, delay_s: float = 0.0
) -> None:
    """Run loadgen once in this process (the child side)."""
    import mlperf_loadgen as lg

    settings = lg.TestSettings()
    settings.FromConfig(str(user_conf), "bert", "Offline")
    if conf_twice:
        # A real loadgen error for tests: "Multiple conf files are used".
        settings.FromConfig(str(user_conf), "bert", "Offline")
    settings.scenario = lg.TestScenario.Offline
    settings.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly

    work: queue.Queue = queue.Queue()

    def completer() -> None:
        while True:
            samples = work.get()
            if samples is None:
                return
            if delay_s:
                time.sleep(delay_s)  # a slow SUT, so a short min_duration is met
            arrays = [answer_for(s.index) for s in samples]
            responses = [
                lg.QuerySampleResponse(s.id, a.ctypes.data, a.nbytes) for s, a in zip(samples, arrays)
            ]
            lg.QuerySamplesComplete(responses)
            del arrays  # buffers were needed until QuerySamplesComplete returned

    thread = threading.Thread(target=completer, name="completer", daemon=True)
    thread.start()
    sut = lg.ConstructSUT(lambda samples: work.put(list(samples)), lambda: None)
    qsl = lg.ConstructQSL(total, min(total, 20), lambda idx: None, lambda idx: None)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(out_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = True
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        work.put(None)
        thread.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)


def run_loadgen(
    out_dir: Path,
    *,
    mode: str,
    total: int = 20,
    user_conf: str = TEST_USER_CONF,
    conf_twice: bool = False,
    delay_s: float = 0.0,
) -> None:
    """Run real loadgen (Offline, bert) in a child process, logs into ``out_dir``.

    Args:
        out_dir: where loadgen writes its four logs; ``user.conf`` is written here too.
        mode: "performance" or "accuracy".
        total: QSL size (every sample is answered in accuracy mode).
        user_conf: the user.conf text.
        conf_twice: call ``FromConfig`` twice, which makes loadgen log a real error.
        delay_s: the SUT waits this long before answering each query.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "user.conf").write_text(user_conf)
    cmd = [sys.executable, "-m", "tests.helpers.loadgen_runs", str(out_dir), mode, str(total)]
    if conf_twice:
        cmd.append("--conf-twice")
    if delay_s:
        cmd += ["--delay-s", str(delay_s)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen child failed ({proc.returncode}): {proc.stderr[-2000:]}")


def make_run_dir(
    path: Path,
    *,
    mode: str,
    total: int = 20,
    count: int | None = None,
    user_conf: str = TEST_USER_CONF,
    conf_twice: bool = False,
    delay_s: float = 0.0,
    facts: list[dict] | None = None,
    execution: str = "test",
    model: str = "demo",
    backend: str = "onnxruntime",
    exact_match: float = 12.5,
    f1: float = 20.25,
) -> Path:
    """A complete run directory per the contract, from a real loadgen run.

    Args:
        path: the run directory to create.
        mode: "performance" or "accuracy".
        total: QSL size; ``count`` (default ``total``) is what run.json says was used.
        user_conf: the user.conf text given to loadgen.
        conf_twice, delay_s: see ``run_loadgen``.
        facts: one ``collect_facts()``-like dict per node (default: this machine's facts, once).
        execution: run.json "execution".
        model, backend: run.json "model" / "backend".
        exact_match, f1: written to run.json (and accuracy.txt) in accuracy mode; these are
            test inputs, the fake SUT does not answer questions.

    Returns:
        ``path``.
    """
    from orchestrator import __version__
    from orchestrator.facts import collect_facts

    started = _dt.datetime.now(_dt.timezone.utc).isoformat()
    run_loadgen(path, mode=mode, total=total, user_conf=user_conf, conf_twice=conf_twice, delay_s=delay_s)
    summary = (path / "mlperf_log_summary.txt").read_text()
    qps = None
    valid = "Result is : VALID" in summary
    for line in summary.splitlines():
        if line.startswith("Samples per second"):
            qps = float(line.split(":", 1)[1])
    nodes = facts if facts is not None else [collect_facts()]
    from orchestrator.records import AccuracyScore, NodeRun, RunRecord, TargetQps

    per_node = [
        NodeRun(name=f"node{i + 1}", node_ip=f"10.77.0.{i + 2}", backend=backend, workers=[f"node{i + 1}"],
                samples=total // len(nodes), seconds=0.1, facts=f)
        for i, f in enumerate(nodes)
    ]
    accuracy = mode == "accuracy"
    used = total if count is None else count
    if accuracy:
        (path / "accuracy.txt").write_text(json.dumps({"exact_match": exact_match, "f1": f1}) + "\n")
    run = RunRecord(
        orch_version=__version__,
        command=f"orch bench --mode {mode} --model {model} --count {total}",
        scenario="Offline",
        mode=mode,
        execution=execution,
        backend=backend,
        backends=[backend],
        model=model,
        model_path="/models/demo.onnx",
        vocab_path="/models/vocab.txt",
        dataset_path="/data/demo_squad.json",
        dataset_sha256="d" * 64,
        features_key="f" * 64,
        total_sample_count=total,
        count=used,
        target_qps=TargetQps(value=10.0, source="test-sizing"),
        samples_per_second=qps,
        samples_per_second_source="loadgen" if qps is not None else None,
        result_valid=valid if not accuracy else None,
        invalid_reasons=[] if valid else ["Min duration satisfied"],
        loadgen_errors=[],
        accuracy=AccuracyScore(exact_match=exact_match, f1=f1, examples_scored=10, examples_total=10,
                               log_sha256="a" * 64, partial=used < total) if accuracy else None,
        system="testhost",
        nodes=len(nodes),
        workers=len(nodes),
        per_node=per_node,
        lost_workers=[],
        rerun_samples=0,
        issued_samples=used,
        startup_seconds=0.1,
        dispatch_seconds=0.1,
        started_at=started,
        finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(),
    )
    run.write(path / "run.json")
    return path


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a run directory that a test may change."""
    shutil.copytree(src, dst)
    return dst


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("mode", choices=["performance", "accuracy"])
    parser.add_argument("total", type=int)
    parser.add_argument("--conf-twice", action="store_true")
    parser.add_argument("--delay-s", type=float, default=0.0)
    args = parser.parse_args()
    os.chdir(args.out_dir)
    _serve(
        args.out_dir, args.mode, args.total, args.out_dir / "user.conf", conf_twice=args.conf_twice, delay_s=args.delay_s
    )
