"""Run directories: built under a temporary name, renamed into place when complete.

- A run is built in ``<parent>/.<name>.partial/``, which carries orch's marker
  (``.orch-run.json``) from its first moment.
- On success, ``run.json`` is written last and the folder is renamed to
  ``<out>``; an earlier run there is replaced only with ``--force`` and only
  when it carries the marker, and only once the new run is complete.
- On failure (an error or an interrupt) the folder becomes
  ``<out>.failed-<time>``, its marker saying why; it never holds run.json.
- A non-empty folder without the marker is never touched, ``--force`` or not.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

from orchestrator import __version__
from orchestrator.errors import InputError
from orchestrator.records import RecordError, RunMarker, read_record

MARKER = ".orch-run.json"
RUN_FILE = "run.json"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def is_orch_run(path: Path) -> bool:
    """True when ``path`` is a folder orch made (it carries the marker)."""
    try:
        read_record(RunMarker, Path(path) / MARKER)
    except RecordError:
        return False
    return True


def _writable_parent(out: Path, flag: str) -> None:
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {out}: {parent} is not a folder", hint=f"choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".orch-probe-")
    except OSError as exc:
        raise InputError(f"{flag} {out}: cannot write in {parent} ({exc.strerror})",
                         hint=f"choose a writable {flag}") from exc
    os.close(fd)
    os.unlink(probe)


def check_out(out: Path, force: bool, *, flag: str = "--out") -> None:
    """Refuse an unusable output folder before anything starts.

    Raises:
        InputError: ``out`` is a file; it is a non-empty folder that is not an
            orch run (never touched, even with ``force``); it holds an earlier
            run and ``force`` is false; or its parent is not writable.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(f"{flag} {out} is a file, not a folder", hint=f"choose another {flag}")
        if any(out.iterdir()):
            if not is_orch_run(out):
                raise InputError(
                    f"{flag} {out} is not empty and is not an orch run directory; nothing in it was touched",
                    hint=f"choose a new or empty folder for {flag}",
                )
            if not force:
                raise InputError(f"{flag} {out} already holds an earlier run",
                                 hint=f"choose another {flag}, or add --force to replace it")
    _writable_parent(out, flag)


class RunDir:
    """One run directory under construction (see the module docstring).

    Args:
        out: the final path.
        kind: "run" (one loadgen run) or "submission-run" (accuracy + performance + tree).
        force: an earlier orch run at ``out`` may be replaced.
        command: the command line, kept in the marker.
    """

    def __init__(self, out: Path, *, kind: str = "run", force: bool = False, command: str = "") -> None:
        self.out = Path(out).absolute()
        self.kind = kind
        self.force = force
        self.command = command
        self.path = self.out.parent / f".{self.out.name}.partial"

    def create(self) -> Path:
        """Make the partial folder (an older one of the same name is orch's and is removed)."""
        check_out(self.out, self.force)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self._mark("partial")
        return self.path

    def _mark(self, state: str, reason: str | None = None, where: Path | None = None) -> None:
        RunMarker(orch_version=__version__, kind=self.kind, created_at=_now(), command=self.command,
                  state=state, reason=reason).write((where or self.path) / MARKER)

    def commit(self) -> Path:
        """Rename the complete run into place, replacing an earlier orch run only now.

        Raises:
            InputError: something that is not an orch run appeared at ``out`` meanwhile.
        """
        self._mark("complete")
        if self.out.exists():
            check_out(self.out, self.force)  # still ours and still allowed
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            self.out.rename(old)
            self.path.rename(self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path.rename(self.out)
        return self.out

    def fail(self, reason: str) -> Path:
        """Leave the partial run as ``<out>.failed-<time>`` with the reason in its marker."""
        failed = self.out.parent / f"{self.out.name}.failed-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while failed.exists():
            n += 1
            failed = failed.with_name(f"{self.out.name}.failed-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
        if not self.path.exists():
            self.path.mkdir(parents=True)
        self._mark("failed", reason)
        (self.path / "FAILED.txt").write_text(f"{reason}\n", encoding="utf-8")
        self.path.rename(failed)
        self.path = failed
        return failed


def repoint(value, old: str, new: str):
    """``value`` (nested dicts and lists of a summary) with every path under ``old`` moved under ``new``."""
    if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
        return new + value[len(old):]
    if isinstance(value, dict):
        return {k: repoint(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [repoint(v, old, new) for v in value]
    return value
