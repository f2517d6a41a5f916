"""Run one function in a fresh spawned process, stop it in order on Ctrl-C, and leave nothing behind.

``orch bench`` (``runner._in_child``) and every ``orch tune`` trial run in a
child like this: loadgen and Ray keep per-process state, so each run gets a
process of its own. The child calls ``become_group_leader()`` first; Ray's
processes (GCS, raylet, its agents, the workers) then belong to its process
group. This process forwards SIGINT / SIGTERM to the child once per signal,
waits for its answer (loadgen ends its query, Ray goes down), and when the
child is gone ends whatever is still in its group: a Ray agent that was
still starting when Ctrl-C came outlives its raylet otherwise (Ray's agents
take 60 s to exit after they see their raylet die).

A run in this process (a test run) cannot end its own process group, which
a shell pipeline shares: it adopts its orphans instead
(``adopt_orphans``, Linux's child subreaper) and ends those that are Ray's
once Ray is shut down (``end_ray_orphans``).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any, Callable

# After the child ended: how long what is left of its group gets after SIGTERM before SIGKILL.
REAP_SECONDS = 5.0


def become_group_leader() -> None:
    """In the child, first: a process group of its own (a terminal's Ctrl-C would reach it twice otherwise)."""
    os.setpgrp()


def run_child(target: Callable[..., None], args: tuple, *, name: str, died: Callable[[int | None], Any],
              stop_seconds: float | None = None) -> tuple[Any, BaseException | None]:
    """Start ``target(*args, send)`` in a spawned process; its one message, and the interrupt if one came.

    ``target`` sends one message on ``send`` and calls ``become_group_leader()``
    first. ``died(exit_code)`` is the message when the child ends without one.
    A first Ctrl-C / SIGTERM is forwarded and the answer still awaited (up to
    ``stop_seconds``, then the child is killed); a second one kills the child
    and is raised at once. Whatever is left in the child's process group is
    ended before this returns or raises.

    Returns:
        (message, interrupt): ``interrupt`` is the first KeyboardInterrupt /
        SIGTERM exception, or None; the caller raises it after reading the answer.
    """
    import multiprocessing

    from orchestrator.bench.session import as_interrupt

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=target, args=(*args, send), name=name)
    child.start()
    send.close()
    interrupt: BaseException | None = None
    interrupted_at = 0.0
    message = None
    try:
        while message is None:
            try:
                if receive.poll(0.2):
                    message = receive.recv()
                elif not child.is_alive():
                    child.join()
                    message = died(child.exitcode)
                elif interrupt is not None and stop_seconds is not None and time.monotonic() - interrupted_at > stop_seconds:
                    child.kill()
                    child.join()
                    message = died(child.exitcode)
            except EOFError:
                child.join()
                message = died(child.exitcode)
            except BaseException as exc:  # KeyboardInterrupt, SIGTERM (orch's handler raises Interrupted)
                if interrupt is not None:
                    child.kill()
                    raise
                interrupt, interrupted_at = exc, time.monotonic()
                stopped = as_interrupt(exc)
                os.kill(child.pid, signal.SIGTERM if stopped.signal_name == "SIGTERM" else signal.SIGINT)
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
    finally:
        reap_group(child.pid)
    return message, interrupt


def reap_group(pgid: int, *, grace: float = REAP_SECONDS) -> list[int]:
    """End every process still in process group ``pgid`` (SIGTERM, then SIGKILL after ``grace``); their pids.

    Called once the group's leader (the child) has ended; only processes it
    started are in the group.
    """
    left = _members(pgid)
    if not left:
        return []
    _signal_all(left, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _members(pgid):
        time.sleep(0.1)
    _signal_all(_members(pgid), signal.SIGKILL)
    return left


def adopt_orphans() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``); done or not.

    A raylet that dies leaves its agents to this process instead of to init,
    so ``end_ray_orphans`` still finds them among this process's descendants.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def end_ray_orphans(*, grace: float = REAP_SECONDS) -> list[int]:
    """After ``ray.shutdown()``: end this process's descendants that are still Ray's; their pids.

    Each gets SIGTERM when first seen and SIGKILL ``grace`` seconds later; the
    walk repeats until none is left, since a raylet that dies hands its agents
    to this process (``adopt_orphans``) only then.
    """
    seen: dict[int, float] = {}
    deadline = time.monotonic() + 3 * grace
    while True:
        left = _ray_descendants()
        now = time.monotonic()
        if not left or now > deadline:
            break
        for pid in left:
            if pid not in seen:
                seen[pid] = now
                _signal_all([pid], signal.SIGTERM)
            elif now - seen[pid] > grace:
                _signal_all([pid], signal.SIGKILL)
        _reap(seen)
        time.sleep(0.1)
    _reap(seen)
    return sorted(seen)


def _reap(pids) -> None:
    """Collect the exit of those ``pids`` that are (adopted) children of this process, so no zombie stays."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _live_processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, command line) of every live (not zombie) process, from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] != "Z":
            found.append((int(entry.name), int(fields[1]), int(fields[2]), command))
    return found


def _ray_descendants() -> list[int]:
    """Live descendants of this process whose command is one of Ray's (``ray::...``, raylet, gcs_server, .../ray/...)."""
    if not os.path.isdir("/proc"):
        return []
    table = _live_processes()
    parents = {pid: ppid for pid, ppid, _, _ in table}
    ray_like = [pid for pid, _, _, command in table
                if command.startswith("ray::") or "/ray/" in command
                or command.split(" ", 1)[0].endswith(("raylet", "gcs_server"))]  # fmt: skip
    me = os.getpid()

    def mine(pid: int) -> bool:
        for _ in range(64):  # a parent chain, not a cycle
            pid = parents.get(pid, 0)
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    return sorted(pid for pid in ray_like if mine(pid))


def _members(pgid: int) -> list[int]:
    """Live (not zombie) processes in group ``pgid``, this process excluded (Linux: read from /proc)."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except OSError:
            return []
        return [-pgid]  # the group as a whole: os.kill(-pgid, sig) signals all of it
    return [pid for pid, _, group, _ in _live_processes() if group == pgid and pid != os.getpid()]


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
