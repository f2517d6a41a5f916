"""The bench driver inside the head node's container (``orch driver CONFIG``).

The controller writes a ``DriverConfig`` record next to the run's folder
under ``/data/runs`` and starts ``orch driver <that file>`` with ``docker exec``
over SSH. The driver writes its pid beside it (so the controller can stop it
on Ctrl-C), runs ``run_bench`` with the live view as JSON lines on stderr,
and leaves one ``DriverResult`` record beside it: the summary, or the error it
raised (type, message, hint), with the folder the run is in either way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from orchestrator.records import DriverConfig, DriverError, DriverResult


def config_path(remote_out: str) -> str:
    return f"{remote_out}.driver.json"


def result_path(remote_out: str) -> str:
    return f"{remote_out}.result.json"


def pid_path(remote_out: str) -> str:
    return f"{remote_out}.pid"


def drive(path: Path) -> int:
    """Run the bench the record at ``path`` describes; returns the exit code.

    The ``DriverResult`` is written beside the config (and printed on stdout)
    whatever happens, an interrupt included.
    """
    from orchestrator.bench.child import describe_error
    from orchestrator.bench.runner import run_bench
    from orchestrator.bench.view import jsonl_view
    from orchestrator.errors import OrchError
    from orchestrator.records import read_record

    try:
        config = read_record(DriverConfig, path)
    except OrchError as exc:
        sys.stderr.write(f"orch: error: {exc}\n")
        return exc.exit_code
    Path(pid_path(config.remote_out)).write_text(f"{os.getpid()}\n")
    out = Path(config.remote_out)
    code = 0
    try:
        summary = run_bench(config.bench.replace(out=out), debug=config.debug, live=jsonl_view, faults=config.faults)
        result = DriverResult(ok=True, summary=summary, run_dir=str(out))
    except BaseException as exc:  # noqa: BLE001 - every error travels back as a record
        error = DriverError.model_validate(describe_error(exc))
        failed = sorted(out.parent.glob(f"{out.name}.failed-*"))
        result = DriverResult(ok=False, error=error, run_dir=str(failed[-1]) if failed else None)
        code = error.exit_code
        if config.debug:
            import traceback

            traceback.print_exc()
    result.write(result_path(config.remote_out))
    Path(pid_path(config.remote_out)).unlink(missing_ok=True)
    sys.stdout.write(result.to_json())
    sys.stdout.flush()
    return code
