"""Send a signal to an ``orch`` command in a child process once it is under way, and time how fast it stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


def interruptible() -> None:
    """``preexec_fn`` for an ``orch`` child a test will Ctrl-C: SIGINT back to its default.

    A shell that starts a job with ``&`` (``nohup bash .ci/run &``) sets SIGINT to
    ignored for it, every child inherits that, and Python then installs no
    KeyboardInterrupt handler: a test's SIGINT would do nothing. A user's terminal
    does not do this, so the test restores what the terminal gives.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass(frozen=True)
class Stopped:
    returncode: int
    stderr: str
    seconds: float  # from the signal to the exit


def interrupt_orch(args: list[str], ready: Callable[[], bool], signame: str, *, ready_within: float = 180) -> Stopped:
    """Run ``python -m orchestrator ARGS``, wait until ``ready()`` (polled), send ``signame``, wait for the exit.

    Raises:
        AssertionError: ``ready()`` never became true.
    """
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    try:
        deadline = time.monotonic() + ready_within
        while not ready():
            assert time.monotonic() < deadline and proc.poll() is None, f"orch {args[0]} never got under way"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(getattr(signal, signame))
        _out, err = proc.communicate(timeout=60)
        return Stopped(proc.returncode, err, time.monotonic() - sent)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
