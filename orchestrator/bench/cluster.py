"""Ray, embedded on this machine or joined as a driver of a running cluster.

With no address, Ray starts here and ``--nodes N`` becomes N workers, each
with its share of the CPUs: the whole distributed code path runs on one
machine. With an address (the driver inside the head container of a
deployed cluster), one worker is placed on each of N alive Ray nodes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Mapping

from orchestrator import hardware
from orchestrator.errors import RunError


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one worker runs."""

    worker: str  # unique worker name
    node: str  # the node it runs on (several workers may share one)
    node_id: str | None  # Ray node id to pin to (None: anywhere)
    num_cpus: float
    threads: int
    backend: str | None = None  # None: the run's --backend
    num_gpus: float = 0.0


def start_ray(address: str | None, *, debug: bool = False, node_ip: str | None = None) -> str:
    """Start (or connect to) Ray.

    Without an address: join the local Ray of ``orch up`` when it runs
    (``orchestrator.bench.local_ray``), else start an embedded one for this
    process (always a new one, whatever ``RAY_ADDRESS`` or another Ray on the
    machine says: ``address="local"``).

    Ray's core worker installs its own fatal-signal handler for SIGTERM (it
    dumps a stack and dies): orch's handler, which stops a run in order, is
    put back once Ray is up.

    Returns:
        How: ``"embedded"``, ``"orch up"`` or ``"address"``.

    Raises:
        RunError: Ray could not start or the cluster is unreachable.
    """
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        return _start_ray(address, debug=debug, node_ip=node_ip)
    finally:
        if main_thread and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


def _start_ray(address: str | None, *, debug: bool, node_ip: str | None) -> str:
    if not address:
        from orchestrator.bench import local_ray

        up, stale = local_ray.read_state()
        if up is not None:
            local_ray.join(up, debug=debug)
            return "orch up"
        if stale:
            sys.stderr.write("orch: warning: the local Ray of orch up is gone; starting one for this run\n")
    try:
        import ray
    except ImportError as exc:
        raise RunError("Ray is not installed", hint="pip install 'orch[cpu]'") from exc
    level = logging.INFO if debug else logging.ERROR
    kwargs = dict(logging_level=level, log_to_driver=debug, configure_logging=True)
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            if node_ip:
                # A driver must join from an address on the cluster network.
                kwargs["_node_ip_address"] = node_ip
            ray.init(address=address, **kwargs)
            return "address"
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        from orchestrator.bench.spawn import adopt_orphans

        adopt_orphans()  # the raylet's agents become ours if it dies first (stop_ray ends them)
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **kwargs,
        )
        return "embedded"
    except Exception as exc:  # Ray raises many kinds here; all mean "no cluster"
        where = f"at {address}" if address else "locally"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(
            f"Ray failed to start {where}: {first}",
            hint="check the address (--ray-address) or run with --debug",
        ) from exc


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at a Ray address."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise RunError(
            f"Ray failed to start at {address}: nothing answers there ({exc})",
            hint="check --ray-address, and that the cluster's head is up (orch status)",
        ) from exc


def stop_ray() -> None:
    """Shut down this process's Ray connection (and the embedded cluster, if ours).

    Also when ``ray.init`` was interrupted half-way (not "initialized", but its
    processes started): ``ray.shutdown`` ends the node it had begun, and
    the raylet's agents it left (adopted, ``spawn.adopt_orphans``) are ended here.
    """
    import ray

    from orchestrator.bench.spawn import end_ray_orphans

    try:
        ray.shutdown()
    finally:
        end_ray_orphans()


def local_slots(workers: int, threads: int | None, node: str) -> list[Slot]:
    """N workers on the embedded cluster, each with its share of this machine's CPUs.

    They share one machine, so they are workers of one node (``node``).
    """
    cpus = os.cpu_count() or 1
    share = cpus / workers
    per_worker_threads = threads or max(1, cpus // workers)
    return [
        Slot(worker=f"local-{i + 1}", node=node, node_id=None, num_cpus=share, threads=per_worker_threads)
        for i in range(workers)
    ]


def cluster_slots(nodes: int, threads: int | None, names: Mapping[str, str] | None = None) -> list[Slot]:
    """One worker on each of the first N alive nodes of a running Ray cluster.

    Args:
        nodes: how many nodes to use.
        threads: threads per worker (default: the node's CPU count).
        names: node IP -> name (from the inventory); unnamed nodes use their IP.

    Raises:
        RunError: fewer than ``nodes`` alive nodes.
    """
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    alive.sort(key=lambda n: (names or {}).get(n["NodeManagerAddress"], n["NodeManagerAddress"]))
    if len(alive) < nodes:
        raise RunError(f"--nodes {nodes} asked for, but the Ray cluster has {len(alive)} alive nodes")
    slots = []
    for node in alive[:nodes]:
        ip = node["NodeManagerAddress"]
        name = (names or {}).get(ip, ip)
        cpus = float(node.get("Resources", {}).get("CPU", 1.0))
        slots.append(Slot(worker=name, node=name, node_id=node["NodeID"], num_cpus=cpus, threads=threads or max(1, int(cpus))))
    return slots


def deployed_slots(deploy, chosen: list[str], backend: str, threads: int | None, workers_per_node: int = 1) -> list[Slot]:
    """Workers for the chosen nodes of a deployed cluster (run by the driver on the head).

    One worker per node, one per GPU on GPU nodes running a GPU backend,
    ``per_node`` per node with the synthetic backend (``synthetic:per_node=8``
    makes a CPU node stand in for an 8-GPU one); each pinned to its node's Ray
    node id; ``backend == "auto"`` gives each node its profile's backend.

    Args:
        deploy: the ``DeployRecord`` (``/data/deploy.json``) written by ``orch deploy``.
        chosen: node names to use.
        backend: the run's backend, or ``auto``.
        threads: threads per worker (default: the node's CPUs / its workers).
        workers_per_node: workers on each CPU node (GPU nodes: one per GPU).

    Raises:
        RunError: a chosen node is unknown or has not joined Ray.
    """
    import ray

    from orchestrator.backends.synthetic import is_synthetic, parse_spec

    by_name = {n.name: n for n in deploy.nodes}
    alive = {n["NodeManagerAddress"]: n for n in ray.nodes() if n.get("Alive")}
    slots: list[Slot] = []
    for name in chosen:
        node = by_name.get(name)
        if node is None:
            raise RunError(f"node {name} is not in the deployed cluster ({', '.join(by_name)})")
        ray_node = alive.get(node.ray_ip)
        if ray_node is None:
            raise RunError(f"node {name} ({node.ray_ip}) has not joined Ray", hint="run orch deploy, then orch status")
        node_backend = hardware.profile_spec(node.profile).backend if backend == "auto" else backend
        cpus = float(ray_node.get("Resources", {}).get("CPU", 1.0))
        gpus = int(node.gpus or 0) if hardware.backend_spec(node_backend).gpus else 0
        modelled = parse_spec(node_backend).per_node if is_synthetic(node_backend) else 0
        count = gpus or max(1, modelled, workers_per_node)
        for i in range(count):
            if gpus:
                worker = f"{name}-gpu{i}"
            elif modelled > 1:
                worker = f"{name}-syn{i}"
            else:
                worker = name if count == 1 else f"{name}-w{i + 1}"
            slots.append(
                Slot(
                    worker=worker,
                    node=name,
                    node_id=ray_node["NodeID"],
                    num_cpus=cpus / count,
                    threads=threads or max(1, int(cpus // count)),
                    backend=node_backend,
                    num_gpus=1.0 if gpus else 0.0,
                )
            )
    return slots
