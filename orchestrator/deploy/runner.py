"""``orch deploy``: preflight, ship image and files, start containers, form the Ray cluster.

Each phase runs on every node in parallel (``fan_out``) and reports every
failed node at once. Every step checks what is already there first, so a
second deploy with nothing changed only reads state: no bytes shipped, no
container or Ray process restarted.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.deploy import plan
from orchestrator.deploy.firewall import ensure_firewall, remove_firewall
from orchestrator.deploy.local_images import image_tag
from orchestrator.deploy.payload import Payload, files_to_send, remote_manifest_command, remote_sizes_command, ship_payload
from orchestrator.deploy.plan import ImageFacts
from orchestrator.errors import InputError, RemoteError
from orchestrator.images.invariant import check_same_runtime
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.fanout import fan_out, failures, raise_failures
from orchestrator.ssh.transport import Transport, check

MiB = 1024 * 1024


class Listener(Protocol):
    """Told about each node's progress (the rich view implements it)."""

    def phase(self, node: str, phase: str, detail: str = "") -> None: ...

    def shipped(self, node: str, nbytes: int) -> None: ...


class _Quiet:
    def phase(self, node: str, phase: str, detail: str = "") -> None:
        pass

    def shipped(self, node: str, nbytes: int) -> None:
        pass


class ImageSource(Protocol):
    def facts(self, tag: str, profile: str | None = None) -> ImageFacts: ...

    def save(self, tag: str) -> Any: ...


@dataclass
class NodeReport:
    """What deploy found and did on one node."""

    name: str
    arch: str = ""
    docker: str = ""
    ray_ip: str = ""
    gpus: list[dict[str, Any]] = field(default_factory=list)
    free_bytes: dict[str, int] = field(default_factory=dict)
    image: str = ""  # "kept" | "shipped"
    image_bytes: int = 0
    image_seconds: float = 0.0
    files_sent: int = 0
    files_bytes: int = 0
    files_seconds: float = 0.0
    container: str = ""  # "kept" | "started" | "replaced"
    ray: str = ""  # "kept" | "started"
    firewall: str = ""  # "kept" | "applied" | "off" | "removed" (off, and an old chain was removed)

    @property
    def image_mib_per_s(self) -> float:
        return self.image_bytes / MiB / self.image_seconds if self.image_seconds > 0 else 0.0

    @property
    def files_mib_per_s(self) -> float:
        return self.files_bytes / MiB / self.files_seconds if self.files_seconds > 0 else 0.0


@dataclass
class DeployReport:
    """The outcome of a deploy: per-node reports, nodes left out and why, wall time."""

    nodes: dict[str, NodeReport]
    left_out: dict[str, str]
    seconds: float
    ray_nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "left_out": self.left_out,
            "nodes": {
                name: {**r.__dict__, "image_mib_per_s": round(r.image_mib_per_s, 1), "files_mib_per_s": round(r.files_mib_per_s, 1)}
                for name, r in self.nodes.items()
            },
        }


class _Unreachable(RemoteError):
    """The node could not be reached at all (as opposed to a failed check)."""


@dataclass
class _Preflight:
    report: NodeReport
    remote_image_id: str
    manifest: str
    sizes: str
    manifest_ok: bool = False


def _preflight_node(
    transport: Transport, inventory: Inventory, node: Node, image: ImageFacts, payload: Payload | None
) -> _Preflight:
    host = node.name
    commands = plan.preflight_commands(inventory, node)
    report = NodeReport(host)
    try:
        uname = transport.run(host, commands["uname"], timeout=60)
    except RemoteError as exc:
        raise _Unreachable(str(exc), host=host) from exc
    report.arch = uname.stdout.strip()
    arch = plan.MACHINE_TO_DOCKER_ARCH.get(report.arch, report.arch)
    if image.arch and arch != image.arch:
        raise RemoteError(
            f"node {host}: CPU architecture {report.arch} does not match image {image.tag} ({image.arch})",
            host=host,
            hint=f"build the image for linux/{arch} (orch images build --platform linux/{arch})",
        )
    docker = transport.run(host, commands["docker"], timeout=60)
    check(docker, host=host, command=commands["docker"], what="docker version",
          hint="install Docker on the node and give the SSH user access to it")
    report.docker = docker.stdout.strip()
    root = check(transport.run(host, commands["docker_root"], timeout=60), host=host,
                 command=commands["docker_root"], what="docker info").stdout.strip() or "/var/lib/docker"
    check(transport.run(host, commands["mkdir"], timeout=60), host=host, command=commands["mkdir"],
          what=f"creating {node.data_dir}")
    df = plan.df_command(node, root)
    free = plan.parse_df(check(transport.run(host, df, timeout=60), host=host, command=df, what="df").stdout)
    report.free_bytes = {node.data_dir: free[0] if free else 0, root: free[-1] if free else 0}
    remote_id = transport.run(host, plan.image_id_command(image.tag), timeout=60)
    remote_image_id = remote_id.stdout.strip() if remote_id.ok else ""
    if remote_image_id != image.id and free and free[-1] < image.size * 1.2:
        raise RemoteError(
            f"node {host}: {free[-1] / 1e9:.1f} GB free in {root}, image {image.tag} needs {image.size * 1.2 / 1e9:.1f} GB",
            host=host,
            hint="free disk space on the node",
        )
    manifest = sizes = ""
    manifest_ok = False
    if payload is not None:
        got = transport.run(host, remote_manifest_command(node), timeout=60)
        manifest, manifest_ok = (got.stdout, True) if got.ok else ("", False)
        sizes = transport.run(host, remote_sizes_command(node, payload), timeout=60).stdout
        need = sum(f.size for f in files_to_send(node, payload, manifest, sizes))
        if free and free[0] < need * 1.05:
            raise RemoteError(
                f"node {host}: {free[0] / 1e9:.1f} GB free in {node.data_dir}, the model and features need {need / 1e9:.1f} GB",
                host=host,
                hint="free disk space or set another data_dir for the node",
            )
    if "ray_ip" in commands:
        got = check(transport.run(host, commands["ray_ip"], timeout=60), host=host, command=commands["ray_ip"],
                    what=f"reading the address of {inventory.ray.interface}")
        looked_up = plan.parse_ip_addr(got.stdout)
        if looked_up is None:
            raise RemoteError(f"node {host}: interface {inventory.ray.interface} has no IPv4 address (ray.interface)",
                              host=host)
        report.ray_ip = looked_up
    else:
        report.ray_ip = plan.ray_ip(node) or ""
    if "iptables" in commands and not transport.run(host, commands["iptables"], timeout=60).ok:
        raise RemoteError(
            f"node {host}: iptables not found, and ray.firewall is on: install iptables on the node "
            "or set ray.firewall: false in the inventory",
            host=host,
        )
    if "nvidia_smi" in commands:
        smi = transport.run(host, commands["nvidia_smi"], timeout=60)
        check(smi, host=host, command=commands["nvidia_smi"], what="nvidia-smi",
              hint="install the NVIDIA driver on the node or use a cpu profile")
        report.gpus = plan.parse_gpus(smi.stdout)
        if len(report.gpus) < node.gpus:
            raise RemoteError(f"node {host}: inventory says gpus: {node.gpus} but nvidia-smi lists {len(report.gpus)}",
                              host=host)
        runtimes = transport.run(host, commands["runtimes"], timeout=60)
        hook = transport.run(host, commands["gpu_hook"], timeout=60)
        if not plan.has_nvidia_runtime(runtimes.stdout) and not hook.stdout.strip():
            raise RemoteError(
                f"node {host}: Docker has no nvidia runtime, so containers cannot use the GPUs",
                host=host,
                hint="install nvidia-container-toolkit and run: nvidia-ctk runtime configure --runtime=docker",
            )
    return _Preflight(report, remote_image_id, manifest, sizes, manifest_ok)


def _ship_image(
    transport: Transport, node: Node, image: ImageFacts, remote_id: str, images: ImageSource, listener: Listener,
    report: NodeReport,
) -> None:
    host = node.name
    if remote_id == image.id:
        report.image = "kept"
        return
    listener.phase(host, "image", f"docker save | docker load ({image.size / MiB:.0f} MiB)")
    counted = 0

    def on_bytes(n: int) -> None:
        nonlocal counted
        counted += n
        listener.shipped(host, n)

    started = time.monotonic()
    command = plan.image_load_command()
    check(transport.stream_in(host, command, images.save(image.tag), on_bytes=on_bytes), host=host,
          command=command, what=f"docker load of {image.tag}")
    report.image_seconds = time.monotonic() - started
    report.image_bytes = counted
    got = transport.run(host, plan.image_id_command(image.tag), timeout=60)
    if got.stdout.strip() != image.id:
        raise RemoteError(
            f"node {host}: after docker load, {image.tag} is {got.stdout.strip() or 'absent'}, expected {image.id}",
            host=host,
        )
    record = plan.record_image_command(node, image)
    check(transport.run(host, record, timeout=60), host=host, command=record, what="recording the loaded image")
    report.image = "shipped"


def _ensure_container(transport: Transport, inventory: Inventory, node: Node, image: ImageFacts, report: NodeReport) -> None:
    host = node.name
    got = transport.run(host, plan.container_inspect_command(inventory, node), timeout=60)
    state = plan.parse_container(got.ok, got.stdout)
    if state is not None and state[0] == "running" and state[1] == image.id:
        report.container = "kept"
        return
    if state is not None:
        command = plan.container_remove_command(inventory, node)
        check(transport.run(host, command, timeout=120), host=host, command=command, what="removing the old container")
    command = plan.container_run_command(inventory, node, image)
    check(transport.run(host, command, timeout=120), host=host, command=command, what="docker run")
    report.container = "replaced" if state is not None else "started"
    if node.gpus:
        command = plan.gpus_in_container_command(inventory, node)
        seen = plan.count_gpu_lines(transport.run(host, command, timeout=120).stdout)
        if seen < node.gpus:
            raise RemoteError(
                f"node {host}: the container sees {seen} GPU(s), the inventory says gpus: {node.gpus}",
                host=host,
                command=command,
                hint="check nvidia-container-toolkit on the node (docker run --gpus all ... nvidia-smi -L)",
            )


def _ray_state(transport: Transport, inventory: Inventory, head_ip: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    head = inventory.head_node
    command = plan.ray_nodes_command(inventory, head, head_ip)
    got = transport.run(head.name, command, timeout=90)
    if not got.ok:
        return {}, (got.stderr.strip().splitlines() or ["ray query failed"])[-1]
    return plan.parse_ray_nodes(got.stdout)


def _joined(node: Node, report: NodeReport, alive: dict[str, dict[str, Any]], old_ids: dict[str, Any]) -> bool:
    info = alive.get(report.ray_ip)
    if info is None or not plan.ray_resources_ok(node, info.get("resources", {})):
        return False
    return report.ray != "started" or info.get("node_id") != old_ids.get(report.ray_ip)


def _start_ray(
    transport: Transport,
    inventory: Inventory,
    nodes: list[Node],
    reports: dict[str, NodeReport],
    listener: Listener,
    *,
    timeout: float,
    sleep: Callable[[float], None],
) -> dict[str, dict[str, Any]]:
    head = inventory.head_node
    head_ip = reports[head.name].ray_ip
    alive: dict[str, dict[str, Any]] = {}
    if reports[head.name].container == "kept":
        alive, _error = _ray_state(transport, inventory, head_ip)
    head_ok = head_ip in alive and plan.ray_resources_ok(head, alive[head_ip].get("resources", {}))
    # Ray ids seen before anything starts: a node restarted here must come back
    # with a new id (the head may still list its old raylet as alive for a while).
    old_ids = {ip: info.get("node_id") for ip, info in alive.items()}

    def start(node: Node, is_head: bool) -> None:
        host = node.name
        report = reports[host]
        listener.phase(host, "ray", "starting")
        if report.container == "kept":
            # A raylet from an earlier cluster may still run here: stop it first.
            transport.run(host, plan.ray_stop_command(inventory, node), timeout=120)
        command = (plan.ray_head_command(inventory, node, report.ray_ip) if is_head
                   else plan.ray_worker_command(inventory, node, report.ray_ip, head_ip))
        check(transport.run(host, command, timeout=180), host=host, command=command, what="ray start")
        report.ray = "started"

    if head_ok:
        reports[head.name].ray = "kept"
    else:
        start(head, True)
        alive = {}
    workers = [n for n in nodes if n.name != head.name]
    todo = []
    for node in workers:
        ip = reports[node.name].ray_ip
        # A fresh container has no raylet, whatever the head still lists for its address.
        fresh = reports[node.name].container != "kept"
        if not fresh and ip in alive and plan.ray_resources_ok(node, alive[ip].get("resources", {})):
            reports[node.name].ray = "kept"
        else:
            todo.append(node)
    raise_failures(fan_out(todo, lambda n: start(n, False)), "ray start")
    if head_ok and not todo:
        return alive  # every node was already in the cluster with its resources

    deadline = time.monotonic() + timeout
    while True:
        alive, error = _ray_state(transport, inventory, head_ip)
        missing = [n.name for n in nodes if not _joined(n, reports[n.name], alive, old_ids)]
        if not missing:
            return alive
        if time.monotonic() > deadline:
            seen = ", ".join(f"{ip} {info.get('resources', {}).get('CPU', 0):g} CPU" for ip, info in alive.items())
            raise RemoteError(
                f"Ray cluster incomplete after {timeout:.0f} s: missing or wrong resources on "
                f"{', '.join(missing)} (alive: {seen or 'none'}{'; ' + error if error else ''})",
                host=",".join(missing),
                hint="check the nodes reach the head on the Ray ports (orch status)",
            )
        sleep(2.0)


def _firewall(
    transport: Transport, inventory: Inventory, nodes: list[Node], reports: dict[str, NodeReport], listener: Listener
) -> None:
    """Before Ray starts: each node admits only the cluster to Ray's ports (or, firewall off, drops orch's chain)."""
    if not inventory.ray.firewall:
        def off(node: Node) -> None:
            removed = remove_firewall(transport, inventory, node, strict=False)
            reports[node.name].firewall = "removed" if removed else "off"

        raise_failures(fan_out(nodes, off), "firewall")
        return
    # Every inventory node's address, left-out ones too when known, so a node
    # that comes back later is not locked out of the others.
    addresses = [reports[n.name].ray_ip if n.name in reports else plan.ray_ip(n) for n in inventory.nodes]
    addresses = [a for a in addresses if a]
    plan.firewall_sources(addresses)  # a non-IPv4 address fails here, once, before any node is touched

    def apply(node: Node) -> None:
        listener.phase(node.name, "firewall")
        reports[node.name].firewall = ensure_firewall(transport, inventory, node, addresses)

    raise_failures(fan_out(nodes, apply), "firewall")


def deploy(
    inventory: Inventory,
    transport: Transport,
    images: ImageSource,
    *,
    payload: Payload | None = None,
    skip_unreachable: bool = False,
    listener: Listener | None = None,
    ray_timeout: float = 180.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployReport:
    """Bring every node of the inventory to the deployed state.

    Args:
        inventory: the validated inventory.
        transport: how to reach the nodes (``ParamikoTransport`` or a fake).
        images: local image facts and ``docker save`` streams (``LocalImages``).
        payload: the model and features to ship (None: ship no files).
        skip_unreachable: go on without nodes that cannot be reached (never the head).
        listener: told each node's phase and bytes shipped.
        ray_timeout: seconds to wait for every node to join Ray.

    Returns:
        What was found and done on each node, and which nodes were left out.

    Raises:
        InputError: a local image is missing, or the images mix Python/Ray
            versions (or lack orch's labels saying which they have).
        RemoteError: one or more nodes failed (all of them named in one line).
    """
    listener = listener or _Quiet()
    started = time.monotonic()
    facts: dict[str, ImageFacts] = {}
    for profile in sorted({n.profile for n in inventory.nodes}):
        facts[profile] = images.facts(image_tag(inventory, profile), profile)
    # Each profile has its own image, but Ray needs one Python minor and one
    # Ray version on every node: a mix fails here, before any node is touched.
    check_same_runtime({f.tag: f.labels for f in facts.values()})

    nodes = list(inventory.nodes)
    for node in nodes:
        listener.phase(node.name, "preflight")
    pre = fan_out(nodes, lambda n: _preflight_node(transport, inventory, n, facts[n.profile], payload))
    left_out: dict[str, str] = {}
    if skip_unreachable:
        for name, exc in failures(pre).items():
            if isinstance(exc, _Unreachable):
                if name == inventory.head:
                    raise InputError(f"the head node {name} is unreachable: {exc}",
                                     hint="fix it or choose another head in the inventory")
                left_out[name] = str(exc)
                listener.phase(name, "left out", "unreachable")
        pre = {k: v for k, v in pre.items() if k not in left_out}
        nodes = [n for n in nodes if n.name not in left_out]
    raise_failures(pre, "preflight")
    reports = {name: r.value.report for name, r in pre.items()}

    def ship(node: Node) -> None:
        p = pre[node.name].value
        _ship_image(transport, node, facts[node.profile], p.remote_image_id, images, listener, reports[node.name])
        if payload is not None:
            listener.phase(node.name, "files")
            t0 = time.monotonic()
            report = reports[node.name]
            ray_ips = {name: r.ray_ip for name, r in reports.items()}
            with tempfile.TemporaryDirectory(prefix="orch-deploy-") as tmp:
                sent = ship_payload(transport, inventory, node, payload, ray_ips,
                                    on_bytes=lambda n: listener.shipped(node.name, n), workdir=Path(tmp),
                                    known=(p.manifest_ok, p.manifest, p.sizes))
            report.files_sent = len(sent)
            report.files_bytes = sum(f.size for f in sent)
            report.files_seconds = time.monotonic() - t0 if sent else 0.0
        listener.phase(node.name, "container")
        _ensure_container(transport, inventory, node, facts[node.profile], reports[node.name])

    raise_failures(fan_out(nodes, ship), "shipping")
    _firewall(transport, inventory, nodes, reports, listener)
    ray_nodes = _start_ray(transport, inventory, nodes, reports, listener, timeout=ray_timeout, sleep=sleep)
    for node in nodes:
        listener.phase(node.name, "ready", f"ray {reports[node.name].ray}")
    return DeployReport(reports, left_out, time.monotonic() - started, ray_nodes)


def report_json(report: DeployReport) -> str:
    """The deploy report as indented JSON (for --json and the timings note)."""
    return json.dumps(report.to_json(), indent=2, sort_keys=True)
