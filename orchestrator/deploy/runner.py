"""``orch deploy``: gather facts, compute the plan, execute it.

``prepare`` reads (facts of every node, in parallel) and plans; it changes
nothing anywhere, which is all ``orch deploy --dry-run`` does. ``execute``
runs the plan's steps stage by stage, every node of a stage in parallel, and
reports every failed node of a stage at once. ``deploy`` is both.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from orchestrator.deploy import commands as cmd
from orchestrator.deploy.bundle import Bundle, mkdirs_command
from orchestrator.deploy.container import Container
from orchestrator.deploy.facts import ImageFacts, gather, ray_members
from orchestrator.deploy.firewall import apply_firewall, remove_firewall
from orchestrator.deploy.local_images import image_tag
from orchestrator.deploy.plan import (
    STAGES,
    ApplyFirewall,
    CopyFiles,
    DeployPlan,
    RemoveFirewall,
    ShipImage,
    StartContainer,
    StartRay,
    Step,
    WaitForRay,
    plan_deploy,
)
from orchestrator.errors import RemoteError
from orchestrator.images.invariant import check_same_runtime
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.fanout import fan_out, raise_failures
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


class Progress:
    """The step each node is running right now: what an interrupt leaves half done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Step | WaitForRay] = {}
        self.started = False  # True once any step began: something may have changed on a node

    def start(self, node: str, step: Step | WaitForRay) -> None:
        with self._lock:
            self._running[node] = step
            self.started = True

    def done(self, node: str) -> None:
        with self._lock:
            self._running.pop(node, None)

    def running(self) -> dict[str, Step | WaitForRay]:
        """node name (``cluster`` for the wait) -> its step in flight."""
        with self._lock:
            return dict(self._running)


@dataclass
class NodeReport:
    """What deploy found and did on one node."""

    name: str
    arch: str = ""
    docker: str = ""
    ray_ip: str = ""
    gpus: list[dict[str, Any]] = field(default_factory=list)
    free_bytes: dict[str, int] = field(default_factory=dict)
    image: str = "kept"  # "kept" | "shipped"
    image_bytes: int = 0
    image_seconds: float = 0.0
    files_sent: int = 0
    files_bytes: int = 0
    files_seconds: float = 0.0
    container: str = "kept"  # "kept" | "started" | "replaced"
    ray: str = "kept"  # "kept" | "started"
    firewall: str = "kept"  # "kept" | "applied" | "off" | "removed" (off, and an old chain was removed)

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


def local_images(inventory: Inventory, images: ImageSource) -> dict[str, ImageFacts]:
    """profile -> the local image its nodes get, checked to share one Python and one Ray.

    Raises:
        InputError: an image is missing here, or the images mix Python/Ray
            versions (or lack orch's labels saying which they have).
    """
    facts = {profile: images.facts(image_tag(inventory, profile), profile)
             for profile in sorted({n.profile for n in inventory.nodes})}
    # Each profile has its own image, but Ray needs one Python minor and one
    # Ray version on every node: a mix fails here, before any node is touched.
    check_same_runtime({f.tag: f.labels for f in facts.values()})
    return facts


def prepare(
    inventory: Inventory,
    transport: Transport,
    images: ImageSource,
    *,
    bundle: Bundle | None = None,
    skip_unreachable: bool = False,
    listener: Listener | None = None,
    ray_timeout: float = 180.0,
) -> DeployPlan:
    """Read every node's facts and plan the deploy; changes nothing on any node.

    Raises:
        InputError: a local image is missing or the images mix Python/Ray
            versions; the head is unreachable with ``skip_unreachable``.
        NodeFailures: one or more nodes failed their checks (every one named).
    """
    listener = listener or _Quiet()
    wanted = local_images(inventory, images)
    for node in inventory.nodes:
        listener.phase(node.name, "preflight")
    facts = gather(inventory, transport, wanted, bundle=bundle, skip_unreachable=skip_unreachable)
    for name in facts.left_out:
        listener.phase(name, "left out", "unreachable")
    return plan_deploy(inventory, facts, wanted, bundle=bundle, ray_timeout=ray_timeout)


@dataclass
class _Context:
    inventory: Inventory
    transport: Transport
    images: ImageSource
    listener: Listener
    progress: Progress
    reports: dict[str, NodeReport]
    sleep: Callable[[float], None]


def _ship_image(ctx: _Context, node: Node, step: ShipImage) -> None:
    host, image, report = node.name, step.image, ctx.reports[node.name]
    counted = 0

    def on_bytes(n: int) -> None:
        nonlocal counted
        counted += n
        ctx.listener.shipped(host, n)

    command = cmd.mkdir_state_command(node)
    check(ctx.transport.run(host, command, timeout=60), host=host, command=command, what=f"creating {node.data_dir}")
    started = time.monotonic()
    command = cmd.image_load_command()
    check(ctx.transport.stream_in(host, command, ctx.images.save(image.tag), on_bytes=on_bytes), host=host,
          command=command, what=f"docker load of {image.tag}")
    report.image_seconds = time.monotonic() - started
    report.image_bytes = counted
    got = ctx.transport.run(host, cmd.image_id_command(image.tag), timeout=60)
    if got.stdout.strip() != image.id:
        raise RemoteError(
            f"node {host}: after docker load, {image.tag} is {got.stdout.strip() or 'absent'}, expected {image.id}",
            host=host,
        )
    record = cmd.record_image_command(node, image.id, image.tag)
    check(ctx.transport.run(host, record, timeout=60), host=host, command=record, what="recording the loaded image")
    report.image = "shipped"


def copy_files(transport: Transport, node: Node, step: CopyFiles, *,
               on_bytes: Callable[[int], None] | None = None) -> None:
    """Run a ``CopyFiles`` step: folders, then the files, then the manifest and deploy.json.

    Raises:
        RemoteError: a command or a copy failed.
    """
    host = node.name
    if step.mkdirs:
        command = mkdirs_command(node, step.files)
        check(transport.run(host, command, timeout=60), host=host, command=command, what="creating folders in data_dir")
    for f in step.files:
        transport.put(host, f.local, cmd.data_path(node, f.relative), on_bytes=on_bytes)
    with tempfile.TemporaryDirectory(prefix="orch-deploy-") as tmp:
        for relative, text in ((cmd.MANIFEST, step.manifest), (cmd.DEPLOY_JSON, step.deploy_json)):
            if text is not None:
                local = Path(tmp) / Path(relative).name
                local.write_text(text, encoding="utf-8")
                transport.put(host, local, cmd.data_path(node, relative))


def _copy_files(ctx: _Context, node: Node, step: CopyFiles) -> None:
    report = ctx.reports[node.name]
    started = time.monotonic()
    copy_files(ctx.transport, node, step, on_bytes=lambda n: ctx.listener.shipped(node.name, n))
    report.files_sent = len(step.files)
    report.files_bytes = sum(f.size for f in step.files)
    report.files_seconds = time.monotonic() - started if step.files else 0.0


def _start_container(ctx: _Context, node: Node, step: StartContainer) -> None:
    host, transport = node.name, ctx.transport
    container = Container(ctx.inventory, node)
    if step.replace:
        command = container.remove_command()
        check(transport.run(host, command, timeout=120), host=host, command=command, what="removing the old container")
    command = container.start_command(step.image.tag)
    check(transport.run(host, command, timeout=120), host=host, command=command, what="docker run")
    ctx.reports[host].container = "replaced" if step.replace else "started"
    if step.gpus:
        seen = cmd.count_gpu_lines(container.run(transport, *cmd.GPUS_IN_CONTAINER, timeout=120).stdout)
        if seen < step.gpus:
            raise RemoteError(
                f"node {host}: the container sees {seen} GPU(s), the inventory says gpus: {step.gpus}",
                host=host,
                command=container.exec_command(*cmd.GPUS_IN_CONTAINER),
                hint="check nvidia-container-toolkit on the node (docker run --gpus all ... nvidia-smi -L)",
            )


def _apply_firewall(ctx: _Context, node: Node, step: ApplyFirewall) -> None:
    apply_firewall(ctx.transport, ctx.inventory, node, step)
    ctx.reports[node.name].firewall = "applied"


def _remove_firewall(ctx: _Context, node: Node, step: RemoveFirewall) -> None:
    remove_firewall(ctx.transport, ctx.inventory, node, step)
    ctx.reports[node.name].firewall = "removed"


def _start_ray(ctx: _Context, node: Node, step: StartRay) -> None:
    host = node.name
    container = Container(ctx.inventory, node)
    if step.stop_first:
        # A raylet from an earlier cluster may still run here: stop it first.
        container.run(ctx.transport, *cmd.RAY_STOP, timeout=120)
    argv = (cmd.ray_head_argv(ctx.inventory, node, step.ip) if step.head
            else cmd.ray_worker_argv(ctx.inventory, node, step.ip, step.head_ip))
    check(container.run(ctx.transport, *argv, timeout=180), host=host, command=container.exec_command(*argv),
          what="ray start")
    ctx.reports[host].ray = "started"


_RUN_STEP: dict[type, Callable[[_Context, Node, Any], None]] = {
    ShipImage: _ship_image,
    CopyFiles: _copy_files,
    StartContainer: _start_container,
    ApplyFirewall: _apply_firewall,
    RemoveFirewall: _remove_firewall,
    StartRay: _start_ray,
}


def _wait_for_ray(ctx: _Context, plan: DeployPlan, wait: WaitForRay) -> dict[str, dict[str, Any]]:
    """Ask the head until every node is alive with its resources; a restarted one must come back with a new id
    (the head may still list its old raylet as alive for a while)."""
    head_ip = plan.ray_ips[ctx.inventory.head]
    nodes = [ctx.inventory.node(name) for name in wait.nodes]

    def joined(node: Node, alive: dict[str, dict[str, Any]]) -> bool:
        ip = plan.ray_ips[node.name]
        info = alive.get(ip)
        if info is None or not cmd.ray_resources_ok(node, info.get("resources", {})):
            return False
        return node.name not in wait.restarted or info.get("node_id") != wait.old_ids.get(ip)

    deadline = time.monotonic() + wait.timeout
    while True:
        alive, error = ray_members(ctx.transport, ctx.inventory, head_ip)
        missing = [n.name for n in nodes if not joined(n, alive)]
        if not missing:
            return alive
        if time.monotonic() > deadline:
            seen = ", ".join(f"{ip} {info.get('resources', {}).get('CPU', 0):g} CPU" for ip, info in alive.items())
            raise RemoteError(
                f"Ray cluster incomplete after {wait.timeout:.0f} s: missing or wrong resources on "
                f"{', '.join(missing)} (alive: {seen or 'none'}{'; ' + error if error else ''})",
                host=ctx.inventory.head,
                hint="check the nodes reach the head on the Ray ports (orch status)",
            )
        ctx.sleep(2.0)


def execute(
    plan: DeployPlan,
    transport: Transport,
    images: ImageSource,
    *,
    listener: Listener | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    started: float | None = None,
) -> DeployReport:
    """Run the plan: each stage on every node in parallel, stages in order.

    Args:
        plan: from ``prepare`` (or ``plan.plan_deploy``).
        transport: how to reach the nodes.
        images: the local engine's ``docker save`` streams.
        listener: told each node's phase and bytes shipped.
        progress: kept up to date with the step each node is running.
        sleep: waits between Ray membership queries (injected for tests).
        started: ``time.monotonic()`` when the deploy began (default: now).

    Raises:
        NodeFailures: one or more nodes failed a stage (every one named, each
            with its own exception); later stages do not run.
        RemoteError: Ray did not come up with every node in time.
    """
    listener = listener or _Quiet()
    progress = progress or Progress()
    started = time.monotonic() if started is None else started
    reports = {name: _report(node_plan) for name, node_plan in plan.nodes.items()}
    ctx = _Context(plan.inventory, transport, images, listener, progress, reports, sleep)

    for stage in STAGES:
        todo = plan.stage(stage)

        def run(name: str, todo: dict[str, list[Step]] = todo) -> None:
            node = plan.nodes[name].node
            try:
                for step in todo[name]:
                    progress.start(name, step)
                    listener.phase(name, step.phase, step.summary())
                    _RUN_STEP[type(step)](ctx, node, step)
            finally:
                progress.done(name)

        raise_failures(fan_out(list(todo), run), stage)
    ray_nodes = plan.facts.ray_alive
    if plan.wait is not None:
        progress.start("cluster", plan.wait)
        for name in plan.wait.nodes:
            listener.phase(name, "ray", "waiting for every node to join")
        ray_nodes = _wait_for_ray(ctx, plan, plan.wait)
        progress.done("cluster")
    for name, report in reports.items():
        listener.phase(name, "ready", f"ray {report.ray}")
    return DeployReport(reports, dict(plan.facts.left_out), time.monotonic() - started, ray_nodes)


def _report(node_plan: Any) -> NodeReport:
    f = node_plan.facts
    return NodeReport(
        f.name, arch=f.arch, docker=f.docker, ray_ip=f.ray_ip, gpus=list(f.gpus), free_bytes=dict(f.free_bytes),
        firewall="kept" if node_plan.firewall_on else "off",
    )


def deploy(
    inventory: Inventory,
    transport: Transport,
    images: ImageSource,
    *,
    bundle: Bundle | None = None,
    skip_unreachable: bool = False,
    listener: Listener | None = None,
    progress: Progress | None = None,
    ray_timeout: float = 180.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployReport:
    """Bring every node of the inventory to the deployed state: ``prepare``, then ``execute``.

    Args:
        inventory: the validated inventory.
        transport: how to reach the nodes (``open_transport`` or a fake).
        images: local image facts and ``docker save`` streams (``LocalImages``).
        bundle: the model and features to ship (None: ship no files).
        skip_unreachable: go on without nodes that cannot be reached (never the head).
        listener: told each node's phase and bytes shipped.
        progress: kept up to date with the step each node is running.
        ray_timeout: seconds to wait for every node to join Ray.

    Returns:
        What was found and done on each node, and which nodes were left out.

    Raises:
        InputError: a local image is missing, or the images mix Python/Ray versions.
        NodeFailures: one or more nodes failed (each named, one line each in the CLI).
        RemoteError: Ray did not come up with every node in time.
    """
    started = time.monotonic()
    plan = prepare(inventory, transport, images, bundle=bundle, skip_unreachable=skip_unreachable,
                   listener=listener, ray_timeout=ray_timeout)
    return execute(plan, transport, images, listener=listener, progress=progress, sleep=sleep, started=started)


def report_json(report: DeployReport) -> str:
    """The deploy report as indented JSON (for --json and the timings note)."""
    return json.dumps(report.to_json(), indent=2, sort_keys=True)
