"""The one reader of loadgen's logs (``mlperf_log_summary.txt``, ``mlperf_log_detail.txt``).

``orch bench`` (what run.json says) and ``orch submit`` (what it refuses)
read the same logs with the same rules, so a run can never look clean in
run.json and be refused by ``orch submit``:

- an *error* is a detail-log entry whose metadata says ``is_error`` or whose
  key starts with ``error`` (loadgen 6.0.17 writes ``error_invalid_config``),
  or, when the detail log names none, the summary's "N ERRORS encountered";
- ``values`` keeps the first value of every key, as the official checker does;
- the result is the summary's ``Result is : VALID|INVALID`` line, and the
  unmet conditions are its ``... : NO`` lines.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import OrchError

SUMMARY = "mlperf_log_summary.txt"
DETAIL = "mlperf_log_detail.txt"
ACCURACY_LOG = "mlperf_log_accuracy.json"

_SPS = re.compile(r"^Samples per second\s*:\s*([0-9.eE+-]+)", re.M)
_RESULT = re.compile(r"^Result is\s*:\s*(\S+)", re.M)
_UNMET = re.compile(r"^\s*(.+?)\s*:\s*NO\s*$", re.M)
_ERROR_COUNT = re.compile(r"^(\d+) ERRORS? encountered", re.M)


class LoadgenLogError(OrchError):
    """A loadgen log is missing or is not what loadgen writes."""


@dataclass(frozen=True)
class LoadgenLog:
    """What orch reads from one run's loadgen logs.

    Attributes:
        run_dir: the folder the logs are in.
        summary: the summary log's text.
        values: key -> first value of every detail-log entry.
        errors: one line per loadgen error (detail log, else the summary's count).
        samples_per_second: the summary's figure, when it has one (performance runs).
        result: "VALID", "INVALID", or None (accuracy runs have no result line).
        unmet: the conditions the summary says were not met (e.g. "Min duration satisfied").
    """

    run_dir: Path
    summary: str
    values: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    samples_per_second: float | None = None
    result: str | None = None
    unmet: list[str] = field(default_factory=list)

    @property
    def result_valid(self) -> bool | None:
        return None if self.result is None else self.result == "VALID"

    def verdict(self) -> str:
        """e.g. ``INVALID (min duration satisfied: no)``."""
        if self.result is None:
            return "no result line"
        if not self.unmet:
            return self.result
        return f"{self.result} ({', '.join(u.lower() + ': no' for u in self.unmet)})"


def read_detail(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Values (first one wins) and errors of a ``mlperf_log_detail.txt``.

    Raises:
        LoadgenLogError: unreadable, a line that is not loadgen's, or no entries.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise LoadgenLogError(f"{path}: cannot read ({exc.strerror})", hint="is this a complete orch run directory?") from exc
    values: dict[str, Any] = {}
    errors: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG "):])
        except json.JSONDecodeError as exc:
            raise LoadgenLogError(f"{path}:{number}: not a loadgen log line ({exc.msg})") from exc
        key = str(entry.get("key", ""))
        values.setdefault(key, entry.get("value"))
        if (entry.get("metadata") or {}).get("is_error") or key.startswith("error"):
            errors.append(f"{key}: {entry.get('value')}")
    if not values:
        raise LoadgenLogError(f"{path}: no loadgen entries found", hint="is this a loadgen mlperf_log_detail.txt?")
    return values, errors


def read_logs(run_dir: Path) -> LoadgenLog:
    """Read both logs of a run directory.

    Raises:
        LoadgenLogError: a log is missing or malformed.
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY
    try:
        summary = summary_path.read_text(errors="replace")
    except OSError as exc:
        raise LoadgenLogError(f"{summary_path}: cannot read ({exc.strerror})",
                              hint="is this a complete orch run directory?") from exc
    values, errors = read_detail(run_dir / DETAIL)
    count = _ERROR_COUNT.search(summary)
    if count and not errors:
        errors.append(f"{SUMMARY}: loadgen reports {count.group(1)} error(s)")
    sps, result = _SPS.search(summary), _RESULT.search(summary)
    return LoadgenLog(
        run_dir=run_dir,
        summary=summary,
        values=values,
        errors=errors,
        samples_per_second=float(sps.group(1)) if sps else None,
        result=result.group(1) if result else None,
        unmet=_UNMET.findall(summary),
    )
