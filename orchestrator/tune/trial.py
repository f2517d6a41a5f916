"""One `orch tune` trial: a whole `orch bench` (``run_bench``) in a fresh spawned process.

A fresh process per trial because loadgen and Ray keep per-process state (a
second loadgen run in one process is not what `orch bench` measures), and so
a trial measures exactly what `orch bench` with that layout will run. The
trial's stdout goes to stderr: `orch tune --json` keeps stdout for its one
JSON object (Ray and loadgen may write to fd 1).

Signals are handled as for ``orch bench`` (``bench.spawn.run_child``): the
child runs in a process group of its own, this process forwards SIGINT /
SIGTERM to it once, waits for its orderly answer (``STOP_SECONDS`` at most),
ends what is left of the child's Ray, and then raises ``Interrupted``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from orchestrator.errors import Interrupted

# How long an interrupted trial may take to stop (loadgen ends its query, Ray goes down).
STOP_SECONDS = 60


def _trial_main(conf_json: str, debug: bool, send) -> None:
    """The spawned process: run one bench and send ("ok", summary) or ("error", error record)."""
    from orchestrator.bench.child import _terminated, describe_error
    from orchestrator.bench.spawn import become_group_leader

    become_group_leader()
    os.dup2(2, 1)
    signal.signal(signal.SIGTERM, _terminated)
    from orchestrator.bench.runner import run_bench
    from orchestrator.records import BenchConfig

    try:
        conf = BenchConfig.from_json(conf_json, source="the tune trial's configuration")
        send.send(("ok", run_bench(conf, debug=debug, live=None)))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent as one record
        if debug:
            import traceback

            traceback.print_exc()
        send.send(("error", describe_error(exc, context=" in the tune trial")))
    finally:
        send.close()


def run_trial(conf, *, debug: bool = False) -> dict[str, Any]:
    """``run_bench(conf)`` in a fresh process; its summary, or its error raised here.

    Raises:
        Interrupted: Ctrl-C / SIGTERM (after the trial stopped).
        OrchError: the trial's own error (type, message and hint kept).
        RunError: the trial's process died.
    """
    from orchestrator.bench.child import error_from
    from orchestrator.bench.session import as_interrupt
    from orchestrator.bench.spawn import run_child

    try:
        message, interrupt = run_child(_trial_main, (conf.to_json(), debug), name="orch-tune-trial", died=_died,
                                       stop_seconds=STOP_SECONDS)
    except BaseException as exc:  # a second Ctrl-C: the trial was killed
        if isinstance(exc, (KeyboardInterrupt, Interrupted)):
            stopped = as_interrupt(exc)
            raise Interrupted(f"{stopped.message}: orch tune was stopped during a trial",
                              signal_name=stopped.signal_name) from exc
        raise
    if interrupt is not None:
        stopped = as_interrupt(interrupt)
        raise Interrupted(f"{stopped.message}: orch tune was stopped during a trial", signal_name=stopped.signal_name)
    if message[0] == "ok":
        return message[1]
    raise error_from(message[1])


def _died(code: int | None) -> tuple[str, dict[str, Any]]:
    return "error", {"type": "RunError", "message": f"the trial's process died (exit code {code})"}
