"""The deploy plan: from every node's facts, the ordered steps that bring it to the deployed state.

Pure: ``plan_deploy`` maps the inventory, the facts ``facts.gather`` read, the
local images and the bundle to typed steps, and connects to nothing. A node
already as wanted gets no step, so a second deploy with nothing changed has
an empty plan (it ships nothing and restarts nothing). ``runner.execute``
runs the steps stage by stage, each stage on every node in parallel:

1. ``shipping``: ``ShipImage``, ``CopyFiles``, ``StartContainer`` (in this order per node);
2. ``firewall``: ``ApplyFirewall`` or ``RemoveFirewall``, before Ray listens;
3. ``ray head``: ``StartRay`` on the head, then ``ray workers``: ``StartRay`` on the others;
4. ``WaitForRay``: until every node is in the cluster with its resources.

``orch deploy --dry-run`` prints ``DeployPlan.describe()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from orchestrator.deploy import commands as cmd
from orchestrator.deploy.bundle import Bundle, BundleFile, deploy_json, files_to_send, json_text, manifest_text
from orchestrator.deploy.container import Container
from orchestrator.deploy.facts import ClusterFacts, ImageFacts, NodeFacts
from orchestrator.inventory import Inventory, Node

MiB = 1024 * 1024

# Stages in the order they run; a stage starts once every node finished the one before.
SHIPPING, FIREWALL, RAY_HEAD, RAY_WORKERS = "shipping", "firewall", "ray head", "ray workers"
STAGES = (SHIPPING, FIREWALL, RAY_HEAD, RAY_WORKERS)


@dataclass(frozen=True)
class ShipImage:
    """``docker save`` here streamed into ``docker load`` on the node, then its id checked and recorded."""

    image: ImageFacts
    stage: ClassVar[str] = SHIPPING
    phase: ClassVar[str] = "image"  # what the live view shows
    if_interrupted: ClassVar[str] = "docker load tags nothing until the whole image has arrived, so no half image carries the tag"

    def summary(self) -> str:
        return f"ship image {self.image.tag} ({self.image.size / MiB:.0f} MiB): docker save | docker load"


@dataclass(frozen=True)
class CopyFiles:
    """Send the bundle's missing files into data_dir, then the manifest and deploy.json when they changed."""

    data_dir: str
    files: tuple[BundleFile, ...]
    mkdirs: bool
    manifest: str | None  # text to write, None when the node's is already this
    deploy_json: str | None
    stage: ClassVar[str] = SHIPPING
    phase: ClassVar[str] = "files"  # what the live view shows
    if_interrupted: ClassVar[str] = "a file cut short is left as <file>.part and sent again next time; the manifest is written last"

    def summary(self) -> str:
        parts = []
        if self.files:
            size = sum(f.size for f in self.files) / MiB
            parts.append(f"copy {len(self.files)} file{'s' if len(self.files) > 1 else ''} ({size:.1f} MiB) to {self.data_dir}")
        written = [name for name, text in (("manifest", self.manifest), ("deploy.json", self.deploy_json)) if text]
        if written:
            parts.append("write " + " and ".join(written))
        return "; ".join(parts) or f"create {self.data_dir}"


@dataclass(frozen=True)
class StartContainer:
    """Remove an old container (another image, or stopped), then ``docker run`` orch's; check the GPUs it sees."""

    name: str
    image: ImageFacts
    replace: bool
    gpus: int
    stage: ClassVar[str] = SHIPPING
    phase: ClassVar[str] = "container"  # what the live view shows
    if_interrupted: ClassVar[str] = "the container may be left without Ray; the next deploy keeps or replaces it"

    def summary(self) -> str:
        verb = "replace" if self.replace else "start"
        return f"{verb} container {self.name} ({self.image.tag})"


@dataclass(frozen=True)
class ApplyFirewall:
    """Make INPUT send TCP for Ray's ports to chain ``ORCH-<cluster>``, which admits only the cluster's addresses."""

    chain: str
    addresses: tuple[str, ...]
    fill: bool  # (re)write the chain's rules
    chain_exists: bool  # flush it first instead of creating it
    delete_jumps: tuple[tuple[str, ...], ...]  # stale INPUT jumps to remove
    insert_jump: bool
    stage: ClassVar[str] = FIREWALL
    phase: ClassVar[str] = "firewall"  # what the live view shows
    if_interrupted: ClassVar[str] = "Ray is not started before its firewall is complete; the next deploy finishes the chain"

    def summary(self) -> str:
        parts = []
        if self.fill:
            parts.append(f"{'rewrite' if self.chain_exists else 'create'} chain {self.chain} "
                         f"(loopback + {len(set(self.addresses))} cluster address{'es' if len(set(self.addresses)) > 1 else ''})")
        if self.delete_jumps:
            parts.append(f"delete {len(self.delete_jumps)} old INPUT jump{'s' if len(self.delete_jumps) > 1 else ''}")
        if self.insert_jump:
            parts.append(f"insert the INPUT jump to {self.chain} for Ray's ports")
        return ", ".join(parts)


@dataclass(frozen=True)
class RemoveFirewall:
    """``ray.firewall: false``: remove a chain and jumps an earlier deploy left."""

    chain: str
    delete_jumps: tuple[tuple[str, ...], ...]
    remove_chain: bool
    stage: ClassVar[str] = FIREWALL
    phase: ClassVar[str] = "firewall"  # what the live view shows
    if_interrupted: ClassVar[str] = "some of orch's old iptables rules may be left; the next deploy removes them"

    def summary(self) -> str:
        return f"firewall off: remove orch's chain {self.chain} and its INPUT jump"


@dataclass(frozen=True)
class StartRay:
    """``ray start`` in the node's container (``ray stop`` first when the container was kept)."""

    head: bool
    ip: str
    head_ip: str
    stop_first: bool
    port: int
    phase: ClassVar[str] = "ray"  # what the live view shows
    if_interrupted: ClassVar[str] = "Ray may be running on part of the cluster; the next deploy starts what is missing"

    @property
    def stage(self) -> str:  # type: ignore[override]
        return RAY_HEAD if self.head else RAY_WORKERS

    def summary(self) -> str:
        stop = "ray stop, then " if self.stop_first else ""
        if self.head:
            return f"{stop}start the Ray head on {self.ip}:{self.port}"
        return f"{stop}join Ray at {self.head_ip}:{self.port} from {self.ip}"


@dataclass(frozen=True)
class WaitForRay:
    """Ask the head until every node is alive in Ray with its CPUs/GPUs (a restarted one with a new id)."""

    nodes: tuple[str, ...]
    restarted: tuple[str, ...]
    old_ids: dict[str, Any]  # Ray IP -> node id seen before anything started
    timeout: float
    if_interrupted: ClassVar[str] = "Ray was started; orch status shows whether every node joined"

    def summary(self) -> str:
        return f"wait until {len(self.nodes)} node{'s' if len(self.nodes) > 1 else ''} are in Ray with their resources (up to {self.timeout:.0f} s)"


Step = Union[ShipImage, CopyFiles, StartContainer, ApplyFirewall, RemoveFirewall, StartRay]


@dataclass(frozen=True)
class NodePlan:
    """One node's steps, in order, and what stays as it is."""

    node: Node
    facts: NodeFacts
    steps: tuple[Step, ...]
    firewall_on: bool

    @property
    def name(self) -> str:
        return self.node.name

    def kept(self) -> list[str]:
        """What this node keeps, for the dry run's one line per unchanged node."""
        kinds = {type(step) for step in self.steps}
        kept = []
        if ShipImage not in kinds:
            kept.append("image")
        if CopyFiles not in kinds:
            kept.append("files")
        if StartContainer not in kinds:
            kept.append("container")
        if not kinds & {ApplyFirewall, RemoveFirewall}:
            kept.append("firewall" if self.firewall_on else "no firewall")
        if StartRay not in kinds:
            kept.append("Ray")
        return kept


@dataclass(frozen=True)
class DeployPlan:
    """Every node's steps and the final wait for Ray."""

    inventory: Inventory
    facts: ClusterFacts
    images: dict[str, ImageFacts]
    bundle: Bundle | None
    nodes: dict[str, NodePlan]
    wait: WaitForRay | None = None
    ray_ips: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when nothing would change on any node."""
        return self.wait is None and not any(p.steps for p in self.nodes.values())

    def stage(self, stage: str) -> dict[str, list[Step]]:
        """node name -> its steps of ``stage``, for the nodes that have any."""
        out = {name: [s for s in p.steps if s.stage == stage] for name, p in self.nodes.items()}
        return {name: steps for name, steps in out.items() if steps}

    def to_json(self) -> dict[str, Any]:
        """The plan as data: per node its steps (stage, kind, summary) and what it keeps."""
        return {
            "cluster": self.inventory.cluster,
            "nodes": {
                name: {
                    "steps": [{"stage": s.stage, "step": type(s).__name__, "summary": s.summary()} for s in p.steps],
                    "kept": p.kept(),
                }
                for name, p in self.nodes.items()
            },
            "left_out": dict(self.facts.left_out),
            "wait_for_ray": self.wait.summary() if self.wait is not None else None,
            "empty": self.empty,
        }

    def describe(self) -> list[str]:
        """The plan as lines: one block per node with its steps in order, each tagged with its stage.

        Stages run in ``STAGES`` order, each on every node at once: all
        shipping, then all firewalls, then the Ray head, then the workers.
        """
        out = []
        for name, plan in self.nodes.items():
            where = f"{name} ({plan.node.host}, Ray {plan.facts.ray_ip}, {plan.node.profile})"
            if not plan.steps:
                out.append(f"{where}: nothing to do ({', '.join(plan.kept())} kept)")
                continue
            out.append(f"{where}:")
            out += [f"  {i}. [{step.stage}] {step.summary()}" for i, step in enumerate(plan.steps, 1)]
        for name, reason in self.facts.left_out.items():
            out.append(f"{name}: left out ({reason})")
        if self.wait is not None:
            out.append(f"cluster: then {self.wait.summary()}")
        return out


def _copy_files(inventory: Inventory, node: Node, facts: NodeFacts, bundle: Bundle,
                ray_ips: dict[str, str]) -> CopyFiles | None:
    send = tuple(files_to_send(node, bundle, facts.manifest or "", facts.sizes))
    has_manifest = facts.manifest is not None
    manifest = manifest_text(bundle)
    if has_manifest and not send and facts.manifest == manifest:
        manifest = None
    deployed = json_text(deploy_json(inventory, node, bundle, ray_ips))
    if facts.deploy_json == deployed:
        deployed = None
    step = CopyFiles(node.data_dir, send, mkdirs=bool(send) or not has_manifest, manifest=manifest, deploy_json=deployed)
    return step if (step.files or step.mkdirs or step.manifest or step.deploy_json) else None


def _firewall(inventory: Inventory, facts: NodeFacts, addresses: list[str]) -> Step | None:
    chain = cmd.firewall_chain(inventory)
    fw = facts.firewall
    if not inventory.ray.firewall:
        if fw.jumps or fw.chain is not None:
            return RemoveFirewall(chain, fw.jumps, remove_chain=fw.chain is not None)
        return None
    fill = fw.chain is None or list(fw.chain) != cmd.firewall_chain_rules(inventory, addresses)
    current = len(fw.jumps) == 1 and fw.jump_current
    if not fill and current:
        return None
    return ApplyFirewall(chain, tuple(addresses), fill=fill, chain_exists=fw.chain is not None,
                         delete_jumps=() if current else fw.jumps, insert_jump=not current)


def plan_deploy(
    inventory: Inventory,
    facts: ClusterFacts,
    images: dict[str, ImageFacts],
    *,
    bundle: Bundle | None = None,
    ray_timeout: float = 180.0,
) -> DeployPlan:
    """The steps that bring every node of ``facts`` to the deployed state.

    Args:
        inventory: the validated inventory.
        facts: what ``facts.gather`` read (only the nodes taking part).
        images: profile -> the local image its nodes run.
        bundle: the files to ship (None: none).
        ray_timeout: seconds the final wait for Ray may take.

    Raises:
        InputError: a cluster address is not IPv4 while ``ray.firewall`` is on.
    """
    ray_ips = {name: f.ray_ip for name, f in facts.nodes.items()}
    # Every inventory node's address, left-out ones too when known, so a node
    # that comes back later is not locked out of the others.
    addresses = [a for a in (ray_ips.get(n.name) or cmd.ray_ip(n) for n in inventory.nodes) if a]
    if inventory.ray.firewall:
        cmd.firewall_sources(addresses)  # a non-IPv4 address fails here, once, before any node is touched
    head = inventory.head_node
    head_ip = ray_ips[head.name]
    alive = facts.ray_alive
    head_kept = facts.nodes[head.name].container_runs(images[head.profile])
    head_ok = head_kept and head_ip in alive and cmd.ray_resources_ok(head, alive[head_ip].get("resources", {}))
    # A head started anew has no workers: they all join it again.
    members = alive if head_ok else {}

    plans: dict[str, NodePlan] = {}
    started: list[str] = []
    for node in inventory.nodes:
        if node.name not in facts.nodes:
            continue
        f = facts.nodes[node.name]
        image = images[node.profile]
        steps: list[Step] = []
        if f.image_id != image.id:
            steps.append(ShipImage(image))
        copy = _copy_files(inventory, node, f, bundle, ray_ips) if bundle is not None else None
        if copy is not None:
            steps.append(copy)
        container_kept = f.container_runs(image)
        if not container_kept:
            steps.append(StartContainer(Container(inventory, node).name, image, replace=f.container is not None,
                                        gpus=node.gpus))
        firewall = _firewall(inventory, f, addresses)
        if firewall is not None:
            steps.append(firewall)
        is_head = node.name == head.name
        in_ray = (head_ok if is_head else
                  container_kept and f.ray_ip in members
                  and cmd.ray_resources_ok(node, members[f.ray_ip].get("resources", {})))
        if not in_ray:
            steps.append(StartRay(is_head, f.ray_ip, head_ip, stop_first=container_kept, port=inventory.ray.port))
            started.append(node.name)
        plans[node.name] = NodePlan(node, f, tuple(steps), inventory.ray.firewall)
    wait = None
    if started:
        old_ids = {ip: info.get("node_id") for ip, info in alive.items()}
        wait = WaitForRay(tuple(plans), tuple(started), old_ids, ray_timeout)
    return DeployPlan(inventory, facts, dict(images), bundle, plans, wait, ray_ips)
