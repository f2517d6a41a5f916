"""What the loadgen driver itself costs: start-up, CPU and memory, chunk round trips, and its ceiling.

The driver is one Python process: loadgen, the dispatcher and every
completion. Each run records here what it spent, so that a user (and
``benchmarks/driver_scale.py``) can see how close the driver is to being the
bottleneck, and so that a later run whose planned rate exceeds what this
driver was measured to complete is told so before it starts.

The ceiling estimate is the query size divided by the CPU time of the whole
driver process (loadgen's own threads, Ray's and the completion thread).
That CPU time per sample changes little with the number of workers (1.1 to
1.7 s per million samples with 1 to 16 synthetic workers on the 2-core
development machine), and the estimates it gives (580,000-910,000 samples/s
there) bracket what the driver-bound runs reached (580,000-760,000). The
completion thread's CPU time alone (the one thread every sample passes
through) gave 1.19 million, above even bare loadgen's median there, so a
warning based on it never fired for a planned rate the driver missed. On a
head node with cores to spare for loadgen's threads the estimate is on the
low side: the warning then comes a little early, not too late
(``docs/scaling.md``; ``benchmarks/driver_scale.py`` measures the real
figure against bare loadgen).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from orchestrator.paths import cache_subdir

# Import time of this module: the fallback for the process start where /proc is absent.
_IMPORTED = time.time()


def process_started() -> float:
    """``time.time()`` when this process started (Linux: from /proc; elsewhere: when orch was imported)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            # The command name (field 2) may hold spaces: split after its closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22, starttime, in clock ticks after boot
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return _IMPORTED


class Startup:
    """Time marks from process start to the moment loadgen starts (seconds since process start)."""

    def __init__(self) -> None:
        self.origin = process_started()
        self.marks: dict[str, float] = {}
        self.ray = "embedded"  # or "orch up", "address" (cluster.start_ray)
        self.workers_reused = 0

    def mark(self, name: str, at: float | None = None) -> None:
        """Record that ``name`` was reached now (or at ``time.time()`` value ``at``)."""
        self.marks[name] = round((time.time() if at is None else at) - self.origin, 3)

    def as_dict(self) -> dict[str, Any]:
        return {**self.marks, "ray": self.ray, "workers_reused": self.workers_reused}


def peak_rss_bytes(status: str = "/proc/self/status") -> int:
    """This process's own peak resident memory, in bytes.

    ``getrusage``'s ``ru_maxrss`` is not that: Linux keeps the larger of it
    and the parent's peak across fork and exec, so a driver started by a
    larger process (``benchmarks/driver_scale.py``, a valid run's child)
    reports its parent's peak as its own (measured: a child of a 311 MB
    parent said 311 MB; its VmHWM, 11 MB). VmHWM in /proc belongs to this
    process's memory alone; ``ru_maxrss`` is the fallback where /proc is absent.
    """
    try:
        with open(status, encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def percentiles_ms(seconds: list[float]) -> dict[str, float] | None:
    """p50/p90/p99/max of a list of durations, in milliseconds (None when empty)."""
    if not seconds:
        return None
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(1000 * ordered[-1], 2)}


def driver_record(outcome: Any, report: Any, *, warning: str | None = None) -> dict[str, Any]:
    """run.json's ``driver`` object for one loadgen run.

    Args:
        outcome: the ``harness.HarnessResult``.
        report: its ``dispatcher.DispatchReport``.
        warning: the ceiling warning printed before the run, if any.
    """
    issued = max(1, outcome.issued)
    per_million = 1e6 / issued
    ceiling = issued / outcome.cpu_seconds if outcome.cpu_seconds > 0 else None  # see the module docstring
    return {
        "cpu_seconds": round(outcome.cpu_seconds, 3),
        "cpu_seconds_per_million_samples": round(outcome.cpu_seconds * per_million, 3),
        "completion_thread_cpu_seconds": round(outcome.completion_cpu_seconds, 3),
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "loadgen_seconds": round(outcome.loadgen_seconds, 3),
        "chunks": len(report.round_trip_seconds),
        "chunk_round_trip_ms": percentiles_ms(report.round_trip_seconds),
        "ceiling_estimate_samples_per_second": round(ceiling, 1) if ceiling else None,
        "ceiling_warning": warning,
    }


def _ceiling_path():
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname()) or "localhost"
    return cache_subdir("driver") / f"{safe}.json"


def store_ceiling(record: dict[str, Any], *, samples: int, command: str) -> None:
    """Remember this driver's measured ceiling (from a run of at least 100,000 samples, else too noisy)."""
    estimate = record.get("ceiling_estimate_samples_per_second")
    if not estimate or samples < 100_000:
        return
    from orchestrator.fileio import atomic_write

    data = {"samples_per_second": estimate, "samples": samples, "command": command,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    atomic_write(_ceiling_path(), json.dumps(data, indent=2) + "\n")


def stored_ceiling() -> dict[str, Any] | None:
    """The last ceiling stored on this machine, or None."""
    try:
        data = json.loads(_ceiling_path().read_text())
        float(data["samples_per_second"])
        return data
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ceiling_warning(planned: float | None) -> str | None:
    """The line to print before a run whose planned rate exceeds this driver's measured ceiling."""
    stored = stored_ceiling()
    if not planned or stored is None or planned <= stored["samples_per_second"]:
        return None
    ceiling = float(stored["samples_per_second"])
    return (
        f"the planned rate of {planned:,.0f} samples/s exceeds what this driver was measured to complete "
        f"(about {ceiling:,.0f} samples/s, {stored['samples']:,} samples on {stored['measured_at']}): "
        f"the run will be bound by the driver, not the workers (docs/scaling.md)"
    )
