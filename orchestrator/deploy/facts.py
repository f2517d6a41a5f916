"""What deploy reads before it plans: each node's facts, gathered in parallel, read-only.

``gather`` runs only commands that change nothing on a node (``uname``,
``docker version``/``info``/``inspect``, ``df``, ``cat`` and ``find`` in
data_dir, ``iptables -S``/``-C``, ``nvidia-smi``, and a Ray membership query
from the head's container) and checks what it read: a node that cannot take
the deploy (wrong CPU architecture, no Docker, too little disk, no iptables
with the firewall on, missing GPUs) fails here, before anything is shipped,
and every failing node is named at once. ``orch deploy --dry-run`` stops
after this and the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.deploy import commands as cmd
from orchestrator.deploy.bundle import Bundle, files_to_send, remote_manifest_command, remote_sizes_command
from orchestrator.deploy.container import Container
from orchestrator.errors import InputError, RemoteError
from orchestrator.inventory import Inventory, Node
from orchestrator.ssh.fanout import failures, fan_out, raise_failures
from orchestrator.ssh.transport import Transport, check, remote_cmd

IMAGE_DISK_MARGIN = 1.2  # a loaded image takes about its size again while docker load unpacks it
FILES_DISK_MARGIN = 1.05
ROOT_HINT = "the firewall needs root on the node (ssh user root) and iptables; or set ray.firewall: false"


@dataclass(frozen=True)
class ImageFacts:
    """A local image as ``docker image inspect`` describes it."""

    tag: str
    id: str
    arch: str  # Docker's name: amd64, arm64
    size: int  # bytes, uncompressed
    labels: dict[str, str] | None = None  # Config.Labels (orch stamps its Python and Ray there)


@dataclass(frozen=True)
class FirewallFacts:
    """orch's iptables state on a node.

    Attributes:
        chain: ``iptables -S <chain>`` lines, or None when there is no chain (or it cannot be read).
        jumps: INPUT rules jumping to the chain, each as the spec after ``-A INPUT``.
        input_readable: ``iptables -S INPUT`` worked (False without root or iptables).
        jump_current: the single jump is the one for Ray's current ports (``iptables -C``).
    """

    chain: tuple[str, ...] | None = None
    jumps: tuple[tuple[str, ...], ...] = ()
    input_readable: bool = False
    jump_current: bool = False


@dataclass(frozen=True)
class NodeFacts:
    """What one node has now, as far as deploy cares."""

    name: str
    arch: str
    docker: str
    docker_root: str
    free_bytes: dict[str, int]
    ray_ip: str
    image_id: str  # id of the profile's tag on the node ("" when absent)
    container: tuple[str, str] | None  # (status, image id) of orch's container, None when absent
    firewall: FirewallFacts
    manifest: str | None = None  # orch's manifest in data_dir (None when absent, or no files asked)
    sizes: str = ""  # ``<size> <path>`` lines of the bundle's files present on the node
    deploy_json: str | None = None  # the node's deploy.json as it is now
    gpus: tuple[dict[str, Any], ...] = ()

    def container_runs(self, image: ImageFacts) -> bool:
        """True when orch's container is running ``image`` (so it is kept)."""
        return self.container is not None and self.container == ("running", image.id)


@dataclass(frozen=True)
class ClusterFacts:
    """Every reachable node's facts, the nodes left out, and Ray's membership as the head sees it.

    Attributes:
        nodes: node name -> facts, inventory order (only nodes that take part).
        left_out: node name -> why (unreachable with ``--skip-unreachable``).
        ray_alive: Ray node IP -> {node_id, resources}: the alive members the head
            lists; empty when the head's container is not kept (Ray was not asked).
    """

    nodes: dict[str, NodeFacts]
    left_out: dict[str, str] = field(default_factory=dict)
    ray_alive: dict[str, dict[str, Any]] = field(default_factory=dict)


class Unreachable(RemoteError):
    """The node could not be reached at all (as opposed to a failed check)."""


def _run(transport: Transport, node: Node, command: str, what: str, hint: str | None = None) -> str:
    return check(transport.run(node.name, command, timeout=60), host=node.name, command=command, what=what,
                 hint=hint).stdout


def _check_image_fits(node: Node, facts_arch: str, image: ImageFacts) -> None:
    arch = cmd.MACHINE_TO_DOCKER_ARCH.get(facts_arch, facts_arch)
    if image.arch and arch != image.arch:
        raise RemoteError(
            f"node {node.name}: CPU architecture {facts_arch} does not match image {image.tag} ({image.arch})",
            host=node.name,
            hint=f"build the image for linux/{arch} (orch images build --platform linux/{arch})",
        )


def read_firewall(
    transport: Transport, inventory: Inventory, node: Node, *, strict: bool, check_jump: bool = True
) -> FirewallFacts:
    """orch's chain and INPUT jumps on ``node``, read only.

    Args:
        strict: a failed read of INPUT is an error (the firewall is on); else
            it means there is nothing orch can or did set up (no root, no iptables).
        check_jump: ask iptables whether the single jump is the current one
            (deploy does; teardown removes whatever jump there is).

    Raises:
        RemoteError: ``strict`` and INPUT cannot be read (no root, say).
    """
    host = node.name
    command = cmd.firewall_read_input_command()
    listed = transport.run(host, command, timeout=60)
    if not listed.ok:
        if strict and listed.returncode != cmd.NOT_FOUND:
            check(listed, host=host, command=command, what="listing iptables INPUT", hint=ROOT_HINT)
        return FirewallFacts()
    jumps = tuple(tuple(spec) for spec in cmd.parse_jumps(inventory, listed.stdout))
    chain = transport.run(host, cmd.firewall_read_chain_command(inventory), timeout=60)
    # -C, not a text match of -S output, decides whether the one jump is the wanted one.
    current = (check_jump and len(jumps) == 1
               and transport.run(host, cmd.firewall_jump_check_command(inventory), timeout=60).ok)
    return FirewallFacts(
        chain=tuple(cmd.parse_rules(chain.stdout)) if chain.ok else None,
        jumps=jumps,
        input_readable=True,
        jump_current=current,
    )


def gather_node(
    transport: Transport, inventory: Inventory, node: Node, image: ImageFacts, bundle: Bundle | None
) -> NodeFacts:
    """Read one node's facts and check that it can take the deploy.

    Raises:
        Unreachable: the node cannot be reached.
        RemoteError: a check failed (the line names the node and what to do).
    """
    host = node.name
    commands = cmd.preflight_commands(inventory, node)
    try:
        uname = transport.run(host, commands["uname"], timeout=60)
    except RemoteError as exc:
        raise Unreachable(str(exc), host=host) from exc
    arch = uname.stdout.strip()
    _check_image_fits(node, arch, image)
    docker = _run(transport, node, commands["docker"], "docker version",
                  hint="install Docker on the node and give the SSH user access to it").strip()
    root = _run(transport, node, commands["docker_root"], "docker info").strip() or "/var/lib/docker"
    free = cmd.parse_df(_run(transport, node, cmd.df_command(node, root), "df"))
    free_bytes = {node.data_dir: free[0] if free else 0, root: free[-1] if free else 0}
    got = transport.run(host, cmd.image_id_command(image.tag), timeout=60)
    image_id = got.stdout.strip() if got.ok else ""
    if image_id != image.id and free and free[-1] < image.size * IMAGE_DISK_MARGIN:
        raise RemoteError(
            f"node {host}: {free[-1] / 1e9:.1f} GB free in {root}, image {image.tag} needs "
            f"{image.size * IMAGE_DISK_MARGIN / 1e9:.1f} GB",
            host=host,
            hint="free disk space on the node",
        )
    manifest, sizes, deployed = None, "", None
    if bundle is not None:
        got = transport.run(host, remote_manifest_command(node), timeout=60)
        manifest = got.stdout if got.ok else None
        sizes = transport.run(host, remote_sizes_command(node, bundle), timeout=60).stdout
        need = sum(f.size for f in files_to_send(node, bundle, manifest or "", sizes))
        if free and free[0] < need * FILES_DISK_MARGIN:
            raise RemoteError(
                f"node {host}: {free[0] / 1e9:.1f} GB free in {node.data_dir}, the model and features need "
                f"{need / 1e9:.1f} GB",
                host=host,
                hint="free disk space or set another data_dir for the node",
            )
        got = transport.run(host, remote_cmd("cat", cmd.data_path(node, cmd.DEPLOY_JSON)), timeout=60)
        deployed = got.stdout if got.ok else None
    ray_ip = _ray_ip(transport, inventory, node, commands)
    if "iptables" in commands and not transport.run(host, commands["iptables"], timeout=60).ok:
        raise RemoteError(
            f"node {host}: iptables not found, and ray.firewall is on: install iptables on the node "
            "or set ray.firewall: false in the inventory",
            host=host,
        )
    firewall = read_firewall(transport, inventory, node, strict=inventory.ray.firewall)
    gpus = _gpus(transport, node, commands)
    got = transport.run(host, Container(inventory, node).inspect_command(), timeout=60)
    return NodeFacts(
        name=host, arch=arch, docker=docker, docker_root=root, free_bytes=free_bytes, ray_ip=ray_ip,
        image_id=image_id, container=cmd.parse_container(got.ok, got.stdout), firewall=firewall,
        manifest=manifest, sizes=sizes, deploy_json=deployed, gpus=gpus,
    )  # fmt: skip


def _ray_ip(transport: Transport, inventory: Inventory, node: Node, commands: Mapping[str, str]) -> str:
    if "ray_ip" not in commands:
        return cmd.ray_ip(node) or ""
    got = _run(transport, node, commands["ray_ip"], f"reading the address of {inventory.ray.interface}")
    looked_up = cmd.parse_ip_addr(got)
    if looked_up is None:
        raise RemoteError(f"node {node.name}: interface {inventory.ray.interface} has no IPv4 address (ray.interface)",
                          host=node.name)
    return looked_up


def _gpus(transport: Transport, node: Node, commands: Mapping[str, str]) -> tuple[dict[str, Any], ...]:
    if "nvidia_smi" not in commands:
        return ()
    host = node.name
    smi = _run(transport, node, commands["nvidia_smi"], "nvidia-smi",
               hint="install the NVIDIA driver on the node or use a cpu profile")
    gpus = tuple(cmd.parse_gpus(smi))
    if len(gpus) < node.gpus:
        raise RemoteError(f"node {host}: inventory says gpus: {node.gpus} but nvidia-smi lists {len(gpus)}", host=host)
    runtimes = transport.run(host, commands["runtimes"], timeout=60)
    hook = transport.run(host, commands["gpu_hook"], timeout=60)
    if not cmd.has_nvidia_runtime(runtimes.stdout) and not hook.stdout.strip():
        raise RemoteError(
            f"node {host}: Docker has no nvidia runtime, so containers cannot use the GPUs",
            host=host,
            hint="install nvidia-container-toolkit and run: nvidia-ctk runtime configure --runtime=docker",
        )
    return gpus


def ray_members(transport: Transport, inventory: Inventory, head_ip: str) -> tuple[dict[str, dict[str, Any]], str | None]:
    """(alive Ray nodes by IP, error or None), asked from inside the head's container."""
    head = inventory.head_node
    got = Container(inventory, head).run(transport, *cmd.ray_nodes_argv(inventory, head_ip), timeout=90)
    if not got.ok:
        return {}, (got.stderr.strip().splitlines() or ["ray query failed"])[-1]
    return cmd.parse_ray_nodes(got.stdout)


def gather(
    inventory: Inventory,
    transport: Transport,
    images: Mapping[str, ImageFacts],
    *,
    bundle: Bundle | None = None,
    skip_unreachable: bool = False,
) -> ClusterFacts:
    """Every node's facts (in parallel), then Ray's membership from the head when its container is kept.

    Args:
        images: profile -> the local image its nodes get.
        bundle: the files to ship (None: none, their facts are not read).
        skip_unreachable: leave out nodes that cannot be reached (never the head).

    Raises:
        InputError: the head is unreachable with ``skip_unreachable``.
        NodeFailures: one or more nodes failed their checks (every one named).
    """
    results = fan_out(
        inventory.nodes, lambda n: gather_node(transport, inventory, n, images[n.profile], bundle)
    )
    left_out: dict[str, str] = {}
    if skip_unreachable:
        for name, exc in failures(results).items():
            if isinstance(exc, Unreachable):
                if name == inventory.head:
                    raise InputError(f"the head node {name} is unreachable: {exc}",
                                     hint="fix it or choose another head in the inventory")
                left_out[name] = str(exc)
        results = {k: v for k, v in results.items() if k not in left_out}
    raise_failures(results, "preflight")
    nodes = {name: r.value for name, r in results.items()}
    head = nodes[inventory.head]
    alive: dict[str, dict[str, Any]] = {}
    if head.container_runs(images[inventory.head_node.profile]):
        alive, _error = ray_members(transport, inventory, head.ray_ip)
    return ClusterFacts(nodes, left_out, alive)


__all__ = ["ClusterFacts", "FirewallFacts", "ImageFacts", "NodeFacts", "Unreachable", "gather", "gather_node",
           "ray_members", "read_firewall"]
