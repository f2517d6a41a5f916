"""A local Ray kept up between runs: ``orch up`` starts it, ``orch down`` stops it.

Why: on a small machine most of a short local run's start-up is Ray's own
(``ray.init`` starts the GCS, an API server and a raylet that waits for two
agents, each a Python process: 4-5 s here) and the workers' (each worker is a
new Python process that imports numpy and its backend and loads the features
and the model: 0.5-1 s of CPU each). While ``orch up``'s Ray runs, a local
``orch bench`` (no inventory, no ``--ray-address``) joins it in about 0.1 s
and finds the workers of its previous run still loaded when the layout is
the same (``workers.start_workers(keep=True)``); with ``orch down``, or
without ``orch up``, every run starts and stops its own embedded Ray as
before.

The Ray is owned by a small daemon, ``python -m orchestrator.bench.local_ray``,
started by ``orch up`` in a session of its own: it starts Ray (head on
127.0.0.1, token authentication as Ray 2.60 does by default, no dashboard),
writes the state file, and waits for SIGTERM or SIGINT; then it shuts Ray
down, which stops every process of that Ray (the raylet and GCS share its
fate even if it is killed), and removes the state file. Nothing global is
written (no ``/tmp/ray/ray_current_cluster``, which ``ray start`` leaves and
which makes every later ``ray.init()`` on the machine join that cluster).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestrator.errors import RunError
from orchestrator.paths import cache_subdir

NAMESPACE = "orch-up"
# Ray 2.60 starts new clusters with token authentication; a joining driver must say it uses it too.
AUTH_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclasses.dataclass(frozen=True)
class LocalRay:
    """What ``orch up`` started (the state file's content)."""

    pid: int
    address: str
    cpus: int
    started_at: str
    log: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def state_path() -> Path:
    return cache_subdir("local-ray") / "state.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_state() -> tuple[LocalRay | None, bool]:
    """(the running local Ray, whether a stale state file was found and removed)."""
    path = state_path()
    try:
        data = json.loads(path.read_text())
        state = LocalRay(**data)
    except FileNotFoundError:
        return None, False
    except (OSError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None, True
    if not _alive(state.pid):
        path.unlink(missing_ok=True)
        return None, True
    return state, False


def join(state: LocalRay, *, debug: bool = False) -> None:
    """Connect this process's Ray driver to the local Ray of ``orch up``.

    Raises:
        RunError: Ray is not installed, or it does not answer.
    """
    import logging

    already = "ray" in sys.modules
    # Ray reads RAY_AUTH_MODE into its C++ config when it is imported.
    os.environ.update(AUTH_ENV)
    try:
        import ray
    except ImportError as exc:
        raise RunError("Ray is not installed", hint="pip install 'orch[cpu]'") from exc

    if already:
        # Imported before the mode was set: refresh the config as Ray itself does for a new cluster.
        from ray._raylet import Config

        Config.initialize("")
    try:
        ray.init(address=state.address, namespace=NAMESPACE, logging_level=logging.INFO if debug else logging.ERROR,
                 log_to_driver=debug, configure_logging=True)  # fmt: skip
    except Exception as exc:  # Ray raises many kinds here; all mean "not reachable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"the local Ray of orch up (pid {state.pid}, {state.address}) did not answer: {first}",
                       hint="run orch down, then orch up again") from exc  # fmt: skip


def up(cpus: int | None = None, *, timeout: float = 120.0) -> tuple[LocalRay, bool]:
    """Start the local Ray daemon unless it runs; returns (its state, whether it was started now).

    Args:
        cpus: logical CPUs of the local Ray (default: this machine's); Ray
            also starts that many idle worker processes, ready for the first run.
        timeout: how long to wait for it.

    Raises:
        RunError: Ray is not installed, or the daemon did not come up (the
            message carries the end of its log).
    """
    state, _ = read_state()
    if state is not None:
        return state, False
    try:
        import ray  # noqa: F401 - only to fail early with the install hint
    except ImportError as exc:
        raise RunError("Ray is not installed", hint="pip install 'orch[cpu]'") from exc
    cpus = int(cpus or os.cpu_count() or 1)
    log = cache_subdir("local-ray") / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.bench.local_ray", "--cpus", str(cpus), "--state", str(state_path())],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **AUTH_ENV},
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        state, _ = read_state()
        if state is not None and state.pid == proc.pid:
            return state, True
        time.sleep(0.1)
    if proc.poll() is None:
        proc.terminate()
    tail = log.read_text(errors="replace").strip().splitlines()[-5:]
    raise RunError(f"the local Ray did not come up (daemon exit code {proc.poll()}): {' | '.join(tail) or 'no output'}",
                   hint=f"see {log}")  # fmt: skip


def down(*, timeout: float = 60.0) -> LocalRay | None:
    """Stop the local Ray daemon (and with it every process of its Ray); returns what was stopped.

    Raises:
        RunError: it did not stop within ``timeout`` even after SIGKILL.
    """
    state, _ = read_state()
    if state is None:
        return None
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(state.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(state.pid):
            time.sleep(0.1)
        if not _alive(state.pid):
            break
    if _alive(state.pid):
        raise RunError(f"the local Ray daemon (pid {state.pid}) did not stop", hint=f"kill {state.pid}")
    state_path().unlink(missing_ok=True)
    return state


def _serve(cpus: int, path: Path) -> int:
    """The daemon: start Ray, write the state file, wait for a signal, shut Ray down."""
    import ray

    from orchestrator.fileio import atomic_write

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # address="local": always a new cluster, whatever RAY_ADDRESS or another Ray on the machine says.
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             namespace=NAMESPACE, log_to_driver=False)  # fmt: skip
    state = LocalRay(
        pid=os.getpid(),
        address=ray.get_runtime_context().gcs_address,
        cpus=cpus,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        log=str(path.parent / "daemon.log"),
    )
    atomic_write(path, json.dumps(state.as_dict(), indent=2) + "\n")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        path.unlink(missing_ok=True)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="orch up's local Ray daemon (started by orch up)")
    parser.add_argument("--cpus", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    sys.exit(_serve(args.cpus, args.state))
