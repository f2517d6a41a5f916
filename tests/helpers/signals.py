"""Send a signal to an ``orch`` command in a child process once it is under way, and time how fast it stops."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


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
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
