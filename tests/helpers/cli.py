"""Run `orch` as a user would (a subprocess), optionally with test faults injected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def orch(*args: str, env: dict | None = None, timeout: int = 300, faults: dict | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``orch ARGS`` in a subprocess; with ``faults``, through ``tests.helpers.orch_with_faults``."""
    if faults is None:
        command = [sys.executable, "-m", "orchestrator", *args]
    else:
        command = [sys.executable, "-m", "tests.helpers.orch_with_faults", json.dumps(faults), *args]
    environment = {**os.environ, **(env or {})}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=cwd)


def orch_json(*args: str, **kwargs) -> dict:
    """``orch ARGS --json`` that must succeed; its one JSON object."""
    proc = orch(*args, "--json", **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)
