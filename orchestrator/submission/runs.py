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

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"
# Files every run directory must hold (user.conf: the one the run used).
RUN_FILES = (SUMMARY, DETAIL, "user.conf")


@dataclass
class DetailLog:
    """The parts of ``mlperf_log_detail.txt`` orch needs.

    Attributes:
        values: key -> value of every ``:::MLLOG`` entry (the first one wins, as in the checker).
        errors: the ``value`` of every entry loadgen flagged as an error.
    """

    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One run directory with its run.json and parsed loadgen logs.

    Attributes:
        path: the run directory.
        meta: run.json.
        detail: the parsed detail log.
        summary: the text of mlperf_log_summary.txt.
        reasons: why this run is not a valid MLPerf result (empty when it is).
    """

    path: Path
    meta: dict[str, Any]
    detail: DetailLog
    summary: str
    reasons: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return str(self.meta.get("mode"))


def parse_detail_log(path: Path) -> DetailLog:
    """Parse loadgen's ``mlperf_log_detail.txt``.

    Errors are entries whose metadata says ``is_error`` or whose key starts
    with ``error`` (loadgen 6.0.17 writes e.g. ``error_invalid_config``).

    Raises:
        SubmissionError: the file is missing or not a loadgen detail log.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise SubmissionError(f"{path}: cannot read ({exc.strerror})", hint="is this a complete orch run directory?") from exc
    log = DetailLog()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG ") :])
        except json.JSONDecodeError as exc:
            raise SubmissionError(f"{path}:{number}: not a loadgen log line ({exc.msg})") from exc
        key = str(entry.get("key", ""))
        log.values.setdefault(key, entry.get("value"))  # the first one wins, as in the checker
        if entry.get("metadata", {}).get("is_error") or key.startswith("error"):
            log.errors.append(f"{key}: {entry.get('value')}")
    if not log.values:
        raise SubmissionError(f"{path}: no loadgen entries found", hint="is this a loadgen mlperf_log_detail.txt?")
    return log


def load_run(path: Path) -> Run:
    """Read one run directory (run.json, summary and detail logs).

    Raises:
        SubmissionError: not a directory, no run.json (an incomplete run),
            unreadable run.json, or a loadgen log missing.
    """
    path = Path(path)
    if not path.is_dir():
        raise SubmissionError(f"{path}: not a directory", hint="give run directories written by orch bench")
    run_json = path / "run.json"
    if not run_json.is_file():
        raise SubmissionError(
            f"{path}: no run.json, so the run is incomplete (orch bench writes it last)",
            hint="run the benchmark again; an interrupted run cannot be submitted",
        )
    try:
        meta = json.loads(run_json.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"{run_json}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("mode") not in ("performance", "accuracy"):
        raise SubmissionError(f"{run_json}: \"mode\" must be \"performance\" or \"accuracy\"")
    if meta.get("complete") is not True:
        raise SubmissionError(f"{run_json}: \"complete\" is not true", hint="run the benchmark again")
    for name in RUN_FILES:
        if not (path / name).is_file():
            raise SubmissionError(f"{path}: {name} is missing", hint="is this a complete orch run directory?")
    summary = (path / SUMMARY).read_text(errors="replace")
    return Run(path=path, meta=meta, detail=parse_detail_log(path / DETAIL), summary=summary)


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
    runs = [load_run(p) for p in paths]
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
    """Loadgen errors in the detail log (and the summary's error count): faults."""
    faults = [f"{run.path / DETAIL}: loadgen error {e}" for e in run.detail.errors]
    match = re.search(r"^(\d+) ERRORS? encountered", run.summary, re.MULTILINE)
    if match and not faults:
        faults.append(f"{run.path / SUMMARY}: loadgen reports {match.group(1)} error(s)")
    if run.detail.values.get("effective_scenario") not in (None, SCENARIO):
        faults.append(f"{run.path / DETAIL}: scenario is {run.detail.values['effective_scenario']}, not {SCENARIO}")
    return faults


def performance_reasons(run: Run) -> list[str]:
    """Why a performance run is not a valid MLPerf result (empty when it is)."""
    reasons = []
    values = run.detail.values
    match = re.search(r"^Result is\s*:\s*(\S+)", run.summary, re.MULTILINE)
    if match is None:
        reasons.append(f"{run.path / SUMMARY}: no \"Result is\" line")
    elif match.group(1) != "VALID":
        unmet = re.findall(r"^\s*(.+?)\s*:\s*NO\s*$", run.summary, re.MULTILINE)
        detail = f" ({', '.join(u.lower() + ': no' for u in unmet)})" if unmet else ""
        reasons.append(f"loadgen: Result is : {match.group(1)}{detail}")
    if run.meta.get("execution") != "valid":
        reasons.append(f"run.json execution is {run.meta.get('execution')!r} (a test run, not a valid one)")
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
    total, count = run.meta.get("total_sample_count"), run.meta.get("count")
    if not isinstance(total, int) or not isinstance(count, int) or not 0 < count <= total:
        faults.append(f"{run.path / 'run.json'}: total_sample_count/count missing or inconsistent ({count} of {total})")
        count = None
    reported = run.detail.values.get("qsl_reported_total_count")
    if count is not None and isinstance(reported, int) and reported != count:
        faults.append(f"{run.path / DETAIL}: loadgen's QSL had {reported} samples, run.json says {count} were used")
    for key in ("exact_match", "f1"):
        if not isinstance(run.meta.get(key), (int, float)):
            faults.append(f"{run.path / 'run.json'}: \"{key}\" is missing (was accuracy scored?)")
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
    total, count = run.meta.get("total_sample_count"), run.meta.get("count")
    if isinstance(total, int) and isinstance(count, int) and count < total:
        reasons.append(
            f"the accuracy run used {count} of {total} samples, not the whole sample library "
            "(its EM/F1 are not the data set's)"
        )
    if run.meta.get("execution") != "valid":
        reasons.append(f"accuracy run.json execution is {run.meta.get('execution')!r}")
    if isinstance(total, int) and total != OFFICIAL_DATASET_SIZE:
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
    for key in ("model", "backend", "dataset_path", "total_sample_count", "nodes", "system_name"):
        a, b = perf.meta.get(key), acc.meta.get(key)
        if a != b:
            faults.append(f"{key} differs: performance run {a!r}, accuracy run {b!r}")
    hosts_p, hosts_a = node_hosts(perf), node_hosts(acc)
    if hosts_p != hosts_a:
        faults.append(f"the runs used different systems: performance on {hosts_p}, accuracy on {hosts_a}")
    return faults


def node_hosts(run: Run) -> list[str]:
    """Sorted host names of the nodes that took part (facts.hostname, else the node name)."""
    hosts = []
    for node in run.meta.get("per_node") or []:
        facts = node.get("facts") or {}
        hosts.append(str(facts.get("hostname") or node.get("name")))
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
