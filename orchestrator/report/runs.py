"""What a report is made from: the run directories `orch bench` writes, read without Ray or loadgen.

A run directory holds ``run.json`` (written last: absent for a failed run,
``<out>.failed-<time>``), ``timeline.jsonl``, loadgen's logs and the
``user.conf``. A submission-mode directory holds ``accuracy/`` and
``performance/`` run directories and ``submission/``: it reads as its two
runs plus the submission's verdict.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from orchestrator.bench.timeline import TIMELINE_FILE, Timeline, TimelineError, read_timeline
from orchestrator.errors import InputError

RUN_FILE = "run.json"
SUMMARY_FILE = "mlperf_log_summary.txt"


@dataclasses.dataclass
class LoadgenBlock:
    """Loadgen's own verdict, read from ``mlperf_log_summary.txt``."""

    samples_per_second: float | None
    result_valid: bool | None
    invalid_reasons: list[str]
    errors: list[str]
    text: str  # the summary's result block, as loadgen wrote it


@dataclasses.dataclass
class RunData:
    """One run, as read from its directory.

    Attributes:
        path: the run directory.
        label: a short name for tables and figures.
        run: run.json's content, or None (a failed or unfinished run).
        timeline: the timeline, or None with ``timeline_problem`` saying why.
        loadgen: loadgen's summary, or None when loadgen wrote none.
        submission: for a run of a submission-mode directory, its summary.json.
    """

    path: Path
    label: str
    run: dict[str, Any] | None
    timeline: Timeline | None
    timeline_problem: str | None
    loadgen: LoadgenBlock | None
    submission: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.run is not None  # run.json is read through its record: present means complete

    def get(self, key: str, default: Any = None) -> Any:
        """A run.json field (``default`` when the run has no run.json or no such field)."""
        return default if self.run is None else self.run.get(key, default)


def is_run_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in (RUN_FILE, TIMELINE_FILE, SUMMARY_FILE))


def load_runs(path: Path) -> list[RunData]:
    """The runs in ``path``: one for a run directory, two for a submission-mode directory.

    Raises:
        InputError: ``path`` is not a directory or holds no orch run.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"RUN_DIR {path} is not a directory", hint="give a directory written by orch bench")
    if is_run_dir(path):
        return [load_run(path, label=path.name)]
    parts = [path / mode for mode in ("accuracy", "performance") if is_run_dir(path / mode)]
    if not parts:
        raise InputError(
            f"RUN_DIR {path} holds no orch run (no {RUN_FILE}, {TIMELINE_FILE} or loadgen summary, "
            "nor accuracy/ or performance/ run directories)",
            hint="give a directory written by orch bench --out",
        )
    submission = _read_json(path / "submission" / "summary.json")
    return [load_run(p, label=f"{path.name}/{p.name}", submission=submission) for p in parts]


def load_run(path: Path, *, label: str, submission: dict[str, Any] | None = None) -> RunData:
    """One run directory (complete or failed)."""
    run = _read_run(path / RUN_FILE)
    timeline, problem = None, None
    if (path / TIMELINE_FILE).is_file():
        try:
            timeline = read_timeline(path / TIMELINE_FILE)
        except TimelineError as exc:
            problem = str(exc)
    else:
        problem = f"no {TIMELINE_FILE} in {path} (recorded by orch bench from this version on)"
    return RunData(path=path, label=label, run=run, timeline=timeline, timeline_problem=problem,
                   loadgen=read_loadgen(path), submission=submission)


def read_loadgen(path: Path) -> LoadgenBlock | None:
    """Loadgen's summary of the run in ``path``, or None when it wrote none."""
    from orchestrator.loadgen_log import LoadgenLogError, read_logs

    summary_path = path / SUMMARY_FILE
    if not summary_path.is_file():
        return None
    try:
        log = read_logs(path)
    except LoadgenLogError:
        return None  # a summary without a usable detail log: nothing trustworthy to show
    block = log.summary.split("Additional Stats")[0].strip().strip("=").strip()
    return LoadgenBlock(log.samples_per_second, log.result_valid, log.unmet, log.errors, block)


def _read_run(path: Path) -> dict[str, Any] | None:
    """run.json through its record, as plain data; None when the run has none.

    Raises:
        InputError: run.json exists but is not a run record this orch reads.
    """
    if not path.is_file():
        return None
    from orchestrator.records import RecordError, RunRecord, read_record

    try:
        return read_record(RunRecord, path).model_dump(mode="json")
    except RecordError as exc:
        raise InputError(str(exc), hint=exc.hint) from exc


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is absent.

    Raises:
        InputError: the file exists but is not a JSON object (damaged or edited).
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} is unreadable or not JSON ({exc})", hint="restore it from the run, or remove it") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object")
    return data
