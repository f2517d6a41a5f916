"""Reading run directories and deciding whether they may become a submission.

A run directory is what ``orch bench`` writes (loadgen's logs, user.conf,
run.json last). The official v6.x checker misses some faults (an INVALID
performance summary, loadgen errors in the performance log), so orch checks
them itself before packaging.

Two kinds of findings:

- *faults* make a run unusable whatever the flags: no run.json, loadgen
  errors, answers missing from the accuracy log, runs that disagree on
  system, model or data set.
- *reasons* a run is not a valid MLPerf result although it is honest:
  loadgen says INVALID, a test-mode run, an accuracy run on part of the
  sample library, settings below the official minimums. They are refused
  unless ``--allow-invalid``, which lets them through, marked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import SubmissionError

MODEL = "bert-99"
SCENARIO = "Offline"
# What the official checker (run as --version v6.1) demands of bert-99 Offline.
OFFICIAL_DATASET_SIZE = 10833
OFFICIAL_MIN_DURATION_MS = 600000
OFFICIAL_PERFORMANCE_SAMPLE_COUNT = 10833
# The v6.1 seeds that loadgen 6.0.17 carries; other values mean user.conf changed them.
OFFICIAL_SEEDS = {
    "effective_qsl_rng_seed": 2085463073848966840,
    "effective_sample_index_rng_seed": 2747215439041700203,
    "effective_schedule_rng_seed": 16159082839903944936,
}

from orchestrator.loadgen_log import ACCURACY_LOG, DETAIL, SUMMARY, LoadgenLog, LoadgenLogError, read_logs
from orchestrator.records import RecordError, RunRecord, read_record

# Files every run directory must hold (user.conf: the one the run used).
RUN_FILES = (SUMMARY, DETAIL, "user.conf")


@dataclass
class Run:
    """One run directory with its run.json record and parsed loadgen logs.

    Attributes:
        path: the run directory.
        record: run.json.
        meta: run.json as plain data (for the writers of the tree).
        log: the loadgen logs, read by the one reader run.json was written with.
        reasons: why this run is not a valid MLPerf result (empty when it is).
    """

    path: Path
    record: RunRecord
    log: LoadgenLog
    reasons: list[str] = field(default_factory=list)

    @property
    def meta(self) -> dict[str, Any]:
        return self.record.model_dump(mode="json")

    @property
    def mode(self) -> str:
        return self.record.mode

    @property
    def summary(self) -> str:
        return self.log.summary


def load_run(path: Path) -> Run:
    """Read one run directory (run.json, summary and detail logs).

    Raises:
        SubmissionError: not a directory, no run.json (an incomplete run),
            a run.json this orch cannot read, or a loadgen log missing.
    """
    path = Path(path)
    if not path.is_dir():
        raise SubmissionError(f"{path}: not a directory", hint="give run directories written by orch bench")
    run_json = path / "run.json"
    if not run_json.is_file():
        failed = path.name.rsplit(".failed-", 1)[0] != path.name
        raise SubmissionError(
            f"{path}: no run.json, so the run is incomplete (orch bench writes it last)"
            + (" (it is a failed run's folder)" if failed else ""),
            hint="run the benchmark again; an interrupted or failed run cannot be submitted",
        )
    try:
        record = read_record(RunRecord, run_json)
    except RecordError as exc:
        raise SubmissionError(str(exc), hint=exc.hint) from exc
    for name in RUN_FILES:
        if not (path / name).is_file():
            raise SubmissionError(f"{path}: {name} is missing", hint="is this a complete orch run directory?")
    try:
        log = read_logs(path)
    except LoadgenLogError as exc:
        raise SubmissionError(str(exc), hint=exc.hint) from exc
    return Run(path=path, record=record, log=log)


def expand_run_dirs(paths: list[Path]) -> list[Path]:
    """Run directories, with the folder of an ``orch bench --mode submission`` standing for its two runs.

    That folder holds ``accuracy/`` and ``performance/`` (and the tree it
    made in ``submission/``); given alone, it means those two runs.
    """
    expanded: list[Path] = []
    for path in paths:
        path = Path(path)
        parts = [path / "accuracy", path / "performance"]
        if not (path / "run.json").exists() and all((p / "run.json").is_file() for p in parts):
            expanded.extend(parts)
        else:
            expanded.append(path)
    return expanded


def pick_runs(paths: list[Path]) -> tuple[Run, Run]:
    """Load the given run directories and pick the performance and the accuracy run.

    Returns:
        (performance run, accuracy run).

    Raises:
        SubmissionError: a directory is unusable, or there is not exactly one
            run of each mode among them.
    """
    if not paths:
        raise SubmissionError("no run directory given", hint="give a performance run and an accuracy run")
    runs = [load_run(p) for p in expand_run_dirs(paths)]
    by_mode: dict[str, list[Run]] = {"performance": [], "accuracy": []}
    for run in runs:
        by_mode[run.mode].append(run)
    for mode, found in by_mode.items():
        if len(found) != 1:
            names = ", ".join(str(r.path) for r in found) or "none"
            raise SubmissionError(
                f"need exactly one {mode} run among the run directories, found {len(found)} ({names})",
                hint="pass one run of each mode (run.json \"mode\")",
            )
    return by_mode["performance"][0], by_mode["accuracy"][0]


def loadgen_faults(run: Run) -> list[str]:
    """Loadgen errors (the same rules run.json's ``loadgen_errors`` were read with), and a wrong scenario."""
    faults = [f"{run.path / DETAIL}: loadgen error {e}" for e in run.log.errors]
    if run.log.values.get("effective_scenario") not in (None, SCENARIO):
        faults.append(f"{run.path / DETAIL}: scenario is {run.log.values['effective_scenario']}, not {SCENARIO}")
    if any(b.partition(":")[0] == "synthetic" for b in [run.record.backend, *run.record.backends]):
        faults.append(f"{run.path}: ran the synthetic backend (modelled timings, no inference): never a result")
    return faults


def performance_reasons(run: Run) -> list[str]:
    """Why a performance run is not a valid MLPerf result (empty when it is)."""
    reasons = []
    values = run.log.values
    if run.log.result is None:
        reasons.append(f"{run.path / SUMMARY}: no \"Result is\" line")
    elif run.log.result != "VALID":
        reasons.append(f"loadgen: Result is : {run.log.verdict()}")
    if run.record.execution != "valid":
        reasons.append(f"run.json execution is {run.record.execution!r} (a test run, not a valid one)")
    min_duration = values.get("effective_min_duration_ms")
    if isinstance(min_duration, (int, float)) and min_duration < OFFICIAL_MIN_DURATION_MS:
        reasons.append(f"min_duration {min_duration} ms < {OFFICIAL_MIN_DURATION_MS} ms required")
    psc = values.get("effective_performance_sample_count")
    if isinstance(psc, int) and psc < OFFICIAL_PERFORMANCE_SAMPLE_COUNT:
        reasons.append(f"performance_sample_count {psc} < {OFFICIAL_PERFORMANCE_SAMPLE_COUNT} required")
    for key, expected in OFFICIAL_SEEDS.items():
        if key in values and values[key] != expected:
            reasons.append(f"{key.removeprefix('effective_')} is {values[key]}, the v6.1 value is {expected}")
    return reasons


def accuracy_faults(run: Run) -> list[str]:
    """Faults of an accuracy run: answers missing from its log, no EM/F1, a QSL that is not the one run.json names."""
    faults = []
    total, count = run.record.total_sample_count, run.record.count
    if not 0 < count <= total:
        faults.append(f"{run.path / 'run.json'}: total_sample_count/count inconsistent ({count} of {total})")
        count = None
    reported = run.log.values.get("qsl_reported_total_count")
    if count is not None and isinstance(reported, int) and reported != count:
        faults.append(f"{run.path / DETAIL}: loadgen's QSL had {reported} samples, run.json says {count} were used")
    if run.record.accuracy is None or run.record.f1 is None or run.record.exact_match is None:
        faults.append(f"{run.path / 'run.json'}: no exact_match/f1 (was accuracy scored?)")
    from orchestrator.tune.guard import submission_faults

    # A reduced precision must meet bert-99 against the model's own fp32 F1 (orch's accuracy guard).
    faults += [f"{run.path / 'run.json'}: {fault}" for fault in submission_faults(run.meta)]
    log = run.path / ACCURACY_LOG
    if not log.is_file():
        faults.append(f"{log}: missing")
    elif count is not None:
        # The QSL holds samples 0..count-1; each must have its answer logged.
        missing = count - len(accuracy_log_indices(log) & set(range(count)))
        if missing:
            faults.append(f"{log}: {missing} of the {count} samples run have no logged answer; the accuracy run is incomplete")
    return faults


def accuracy_reasons(run: Run) -> list[str]:
    """Why an accuracy run does not give the official accuracy (honest, but not valid)."""
    reasons = []
    total, count = run.record.total_sample_count, run.record.count
    if count < total:
        reasons.append(
            f"the accuracy run used {count} of {total} samples, not the whole sample library "
            "(its EM/F1 are not the data set's)"
        )
    if run.record.execution != "valid":
        reasons.append(f"accuracy run.json execution is {run.record.execution!r}")
    if total != OFFICIAL_DATASET_SIZE:
        reasons.append(
            f"the sample library has {total} samples, not the {OFFICIAL_DATASET_SIZE} of the SQuAD v1.1 dev set"
        )
    return reasons


def accuracy_log_indices(path: Path) -> set[int]:
    """The qsl_idx values answered in a loadgen ``mlperf_log_accuracy.json``.

    Raises:
        SubmissionError: the file is not loadgen's JSON list of answers.
    """
    try:
        entries = json.loads(path.read_text())
        return {int(e["qsl_idx"]) for e in entries}
    except (OSError, json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise SubmissionError(f"{path}: not a loadgen accuracy log ({exc})") from exc


def consistency_faults(perf: Run, acc: Run) -> list[str]:
    """Faults when the two runs did not run the same thing on the same system."""
    faults = []
    for key in ("model", "backend", "model_path", "features_key", "total_sample_count", "nodes", "workers", "system"):
        a, b = getattr(perf.record, key), getattr(acc.record, key)
        if a != b:
            faults.append(f"{key} differs: performance run {a!r}, accuracy run {b!r}")
    hosts_p, hosts_a = node_hosts(perf), node_hosts(acc)
    if hosts_p != hosts_a:
        faults.append(f"the runs used different systems: performance on {hosts_p}, accuracy on {hosts_a}")
    return faults


def node_hosts(run: Run) -> list[str]:
    """Sorted host names of the nodes that took part (facts.hostname, else the node name)."""
    hosts = []
    for node in run.record.per_node:
        hosts.append(str(node.facts.get("hostname") or node.name))
    return sorted(hosts)


def check_runs(perf: Run, acc: Run) -> list[str]:
    """All faults of the pair; fills ``perf.reasons`` and ``acc.reasons``.

    Returns:
        The faults (an empty list when the runs can be packaged, perhaps
        marked invalid).
    """
    perf.reasons = performance_reasons(perf)
    acc.reasons = accuracy_reasons(acc)
    return loadgen_faults(perf) + loadgen_faults(acc) + accuracy_faults(acc) + consistency_faults(perf, acc)
