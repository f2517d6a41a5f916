"""The body of a spawned run process (``runner._in_child``) and how its errors travel back."""

from __future__ import annotations

import signal
from typing import Any

from orchestrator.errors import Interrupted, OrchError, rebuild_error
from orchestrator.records import DriverError, RunJob


def describe_error(exc: BaseException, *, context: str = "") -> dict[str, Any]:
    """An exception as the (type, message, hint, exit_code) record that crosses a process."""
    if isinstance(exc, KeyboardInterrupt):
        exc = Interrupted("interrupted (Ctrl-C)")
    if isinstance(exc, OrchError):
        return DriverError(type=type(exc).__name__, message=exc.message, hint=exc.hint, exit_code=exc.exit_code).model_dump()
    return DriverError(type="InternalError", message=f"internal error{context}: {type(exc).__name__}: {exc}",
                       exit_code=1).model_dump()


def error_from(data: dict[str, Any]) -> BaseException:
    """The exception a ``describe_error`` record stands for, to raise on this side."""
    error = DriverError.model_validate(data)
    if error.type == "InternalError":
        return RuntimeError(error.message)
    return rebuild_error(error.type, error.message, error.hint, error.exit_code)


def _terminated(signum: int, frame) -> None:  # noqa: ARG001
    raise Interrupted("stopped by SIGTERM", signal_name="SIGTERM")


def child_main(job_json: str, live, send) -> None:
    """Run one ``RunJob`` and send ("ok", run.json) or ("error", error record) back."""
    from orchestrator.bench.spawn import become_group_leader

    become_group_leader()
    signal.signal(signal.SIGTERM, _terminated)
    from orchestrator.bench.runner import _execute

    job = RunJob.from_json(job_json, source="the run job")
    try:
        record = _execute(job, live=live)
        send.send(("ok", record.to_json()))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent as one record
        if job.debug:
            import traceback

            traceback.print_exc()
        send.send(("error", describe_error(exc, context=f" in the {job.mode} run")))
    finally:
        send.close()
