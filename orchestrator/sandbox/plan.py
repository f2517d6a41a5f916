"""Pure planning of a sandbox: names, addresses, CPU sets, paths and the exact commands.

Nothing here touches the system; ``files`` renders the nodes' files from a
plan; ``netns``, ``daemons`` and ``lifecycle`` execute what these functions
return, and the unit tests pin them down.

Layout for a sandbox called ``NAME`` with subnet index ``k``:

- bridge ``orch-<8 hex of sha256(NAME)>`` holding ``10.77.k.1/24`` (the host side);
- node ``i`` (1-based): netns ``orch-NAME-node<i>``, veth ``o<8 hex>-<i>`` on the
  host, ``eth0`` at ``10.77.k.<10+i>/24`` in the node, no default route;
- every node runs ``init.sh`` as PID 1 of its own PID, mount, UTS and IPC
  namespaces: private /run, /tmp, /root, /srv, /var/lib/docker, /var/log,
  /etc/ssh and /etc/docker bind-mounted from the node's folder, then its own
  sshd and dockerd, so a login on the node sees that node's engine;
- CPU pinning uses a cgroup cpuset per node (``orch-NAME-node<i>``); the node's
  daemons live in its ``init`` child and Docker puts containers beside it
  (``--cgroup-parent``), so containers inherit the node's CPUs.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.fileio import sha256_text
from orchestrator.hardware import DEFAULT_PROFILE

DEFAULT_NAME = "orch"
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,15}(-[a-z0-9]{1,15}){0,3}$")
MAX_NODES = 32
SUBNET_BASE = "10.77"  # 10.77.<k>.0/24, a private range unlikely to clash
FIRST_NODE_HOST = 10  # node i gets .<10 + i>
NODE_DATA_DIR = "/srv/orch"  # /srv is private per node, so is the data dir
PROFILE = DEFAULT_PROFILE  # every node runs the default CPU image
CGROUP_ROOT = Path("/sys/fs/cgroup")
SSHD = "/usr/sbin/sshd"
DOCKERD = "/usr/sbin/dockerd"

# Folders of the node bind-mounted over the host's, in this order; a target that
# holds the sandbox folder itself (/root for ~/.cache/orch, /tmp for a test's
# cache) is moved last, else it would hide the sources of the binds after it.
NODE_MOUNTS: tuple[tuple[str, str], ...] = (
    ("etc/hostname", "/etc/hostname"),
    ("etc/ssh", "/etc/ssh"),
    ("etc/docker", "/etc/docker"),
    ("root", "/root"),
    ("srv", "/srv"),
    ("docker", "/var/lib/docker"),
    ("log", "/var/log"),
    ("tmp", "/tmp"),
)


@dataclass(frozen=True)
class NodePlan:
    """One emulated node."""

    name: str
    index: int
    address: str
    netns: str
    veth: str
    cpus: tuple[int, ...]
    cgroup: str
    dir: Path

    @property
    def init_script(self) -> Path:
        return self.dir / "init.sh"

    @property
    def host_key(self) -> Path:
        return self.dir / "etc" / "ssh" / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "etc" / "ssh" / "sshd_config"

    @property
    def authorized_keys(self) -> Path:
        return self.dir / "root" / ".ssh" / "authorized_keys"

    @property
    def launch_log(self) -> Path:
        return self.dir / "init.log"

    @property
    def dockerd_log(self) -> Path:
        return self.dir / "log" / "dockerd.log"

    @property
    def sshd_log(self) -> Path:
        return self.dir / "log" / "sshd.log"


@dataclass(frozen=True)
class SandboxPlan:
    """Everything ``up`` creates, computed before anything is created."""

    name: str
    dir: Path
    subnet_index: int
    bridge: str
    nodes: tuple[NodePlan, ...]
    inventory_path: Path
    cgroup_version: int = 1
    cpuset_mems: str = "0"
    sshd: str = SSHD
    dockerd: str = DOCKERD
    host_mountpoints: tuple[str, ...] = field(default=())

    @property
    def network(self) -> ipaddress.IPv4Network:
        return subnet(self.subnet_index)

    @property
    def host_address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def identity_file(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    @property
    def hosts_file(self) -> Path:
        return self.dir / "hosts"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def firewall_comment(self) -> str:
        return firewall_comment(self.name)

    @property
    def pinned(self) -> bool:
        return any(node.cpus for node in self.nodes)


def covers(target: str, path: Path) -> bool:
    """Whether mounting over ``target`` hides ``path`` (it is ``target`` or lies below it)."""
    return path == Path(target) or Path(target) in path.parents


def validate_name(name: str) -> str:
    """Check a sandbox name (it ends up in netns, cgroup and file names).

    Raises:
        InputError: the name is not lower-case letters/digits in up to four dash-separated parts.
    """
    if not NAME_RE.match(name) or len(name) > 32:
        raise InputError(
            f"--name {name!r}: use lower-case letters and digits, starting with a letter, "
            "in up to four dash-separated parts (at most 32 characters), e.g. 'orch' or 'ci-2'"
        )
    return name


def _digest(name: str) -> str:
    return sha256_text(name)


def bridge_name(name: str) -> str:
    """The bridge of sandbox ``name`` (interface names are limited to 15 characters)."""
    return f"orch-{_digest(name)[:8]}"


def preferred_subnet_index(name: str) -> int:
    """The third octet this sandbox tries first: stable per name, in 1..254."""
    return int(_digest(name)[:4], 16) % 254 + 1


def subnet(index: int) -> ipaddress.IPv4Network:
    """The /24 of subnet index ``index`` (``10.77.<index>.0/24``)."""
    if not 0 <= index <= 255:
        raise ValueError(f"subnet index {index} is not in 0..255")
    return ipaddress.IPv4Network(f"{SUBNET_BASE}.{index}.0/24")


def choose_subnet_index(name: str, used: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> int:
    """The first index from the name's preferred one whose /24 overlaps no network in ``used``.

    Raises:
        InputError: every 10.77.x.0/24 overlaps a route or address of this machine.
    """
    start = preferred_subnet_index(name)
    for step in range(254):
        index = (start - 1 + step) % 254 + 1
        candidate = subnet(index)
        if not any(candidate.version == net.version and candidate.overlaps(net) for net in used):
            return index
    raise InputError(
        f"sandbox {name!r}: every {SUBNET_BASE}.x.0/24 overlaps a route or address of this machine; "
        "remove the conflicting route or run orch sandbox down for old sandboxes"
    )


def assign_cpus(nodes: int, cpus_per_node: int | None, available: Sequence[int]) -> list[tuple[int, ...]]:
    """Disjoint CPU sets, ``cpus_per_node`` consecutive CPUs of ``available`` per node.

    Returns:
        One tuple per node; empty tuples when ``cpus_per_node`` is None (no pinning).

    Raises:
        InputError: the machine has fewer CPUs than ``nodes * cpus_per_node``.
    """
    if cpus_per_node is None:
        return [() for _ in range(nodes)]
    if cpus_per_node < 1:
        raise InputError(f"--cpus-per-node {cpus_per_node}: give at least 1, or leave it out for no pinning")
    cpus = sorted(available)
    need = nodes * cpus_per_node
    if need > len(cpus):
        raise InputError(
            f"--cpus-per-node {cpus_per_node} with --nodes {nodes} needs {need} CPUs but this machine offers "
            f"{len(cpus)} ({format_cpus(cpus)}); lower --nodes or --cpus-per-node, or leave it out for no pinning"
        )
    return [tuple(cpus[i * cpus_per_node : (i + 1) * cpus_per_node]) for i in range(nodes)]


def format_cpus(cpus: Sequence[int]) -> str:
    """A cpuset list string: ``(0, 1, 2, 5)`` -> ``"0-2,5"``."""
    parts: list[str] = []
    ordered = sorted(cpus)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def plan_sandbox(
    name: str,
    nodes: int,
    *,
    root: Path,
    subnet_index: int,
    cpus_per_node: int | None = None,
    available_cpus: Sequence[int] = (),
    cgroup_version: int = 1,
    cpuset_mems: str = "0",
    inventory_path: Path | None = None,
    sshd: str = SSHD,
    dockerd: str = DOCKERD,
) -> SandboxPlan:
    """Plan a sandbox of ``nodes`` nodes in folder ``root / name``.

    Args:
        name: the sandbox name (validated).
        nodes: how many nodes, 1..32.
        root: the folder holding all sandboxes (``cache_subdir("sandbox")``).
        subnet_index: third octet of the node network (see ``choose_subnet_index``).
        cpus_per_node: CPUs pinned per node, or None for no pinning.
        available_cpus: the CPUs this process may use (``os.sched_getaffinity(0)``).
        cgroup_version: 1 or 2 (where cpuset cgroups live).
        cpuset_mems: memory nodes for cgroup v1 cpusets (the root cpuset's).
        inventory_path: where to write the inventory (default: in the sandbox folder).
        sshd: absolute path of the sshd binary.
        dockerd: absolute path of the dockerd binary.

    Raises:
        InputError: bad name, node count or CPU request.
    """
    validate_name(name)
    if not 1 <= nodes <= MAX_NODES:
        raise InputError(f"--nodes {nodes}: give 1 to {MAX_NODES}")
    if cgroup_version not in (1, 2):
        raise ValueError(f"cgroup_version must be 1 or 2, not {cgroup_version}")
    digest = _digest(name)[:8]
    network = subnet(subnet_index)
    directory = Path(root) / name
    for hidden in ("/run", "/var/run", "/proc", "/sys", "/dev"):
        # init.sh mounts fresh file systems there before anything else
        if covers(hidden, directory):
            raise InputError(
                f"sandbox folder {directory} is under {hidden}, which every node replaces; "
                "set ORCH_CACHE_DIR to a folder elsewhere"
            )
    cpu_sets = assign_cpus(nodes, cpus_per_node, available_cpus)
    planned = tuple(
        NodePlan(
            name=f"node{i}",
            index=i,
            address=str(network.network_address + FIRST_NODE_HOST + i),
            netns=f"orch-{name}-node{i}",
            veth=f"o{digest}-{i}",
            cpus=cpu_sets[i - 1],
            cgroup=f"orch-{name}-node{i}",
            dir=directory / f"node{i}",
        )
        for i in range(1, nodes + 1)
    )
    return SandboxPlan(
        name=name,
        dir=directory,
        subnet_index=subnet_index,
        bridge=bridge_name(name),
        nodes=planned,
        inventory_path=Path(inventory_path) if inventory_path else directory / "inventory.yaml",
        cgroup_version=cgroup_version,
        cpuset_mems=cpuset_mems,
        sshd=sshd,
        dockerd=dockerd,
        host_mountpoints=tuple(target for _, target in NODE_MOUNTS),
    )


# -- network -------------------------------------------------------------------


def network_up_commands(plan: SandboxPlan) -> list[list[str]]:
    """The ``ip`` commands creating the bridge, the namespaces and the veth pairs, in order."""
    prefix = plan.network.prefixlen
    commands = [
        ["ip", "link", "add", plan.bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{plan.host_address}/{prefix}", "dev", plan.bridge],
        ["ip", "link", "set", plan.bridge, "up"],
    ]
    for node in plan.nodes:
        commands += [
            ["ip", "netns", "add", node.netns],
            ["ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns],
            ["ip", "-n", node.netns, "addr", "add", f"{node.address}/{prefix}", "dev", "eth0"],
            ["ip", "-n", node.netns, "link", "set", "lo", "up"],
            ["ip", "-n", node.netns, "link", "set", "eth0", "up"],
            ["ip", "link", "set", node.veth, "master", plan.bridge],
            ["ip", "link", "set", node.veth, "up"],
        ]
    return commands


def firewall_comment(name: str) -> str:
    """The iptables comment that marks this sandbox's rules (``down`` finds them by it)."""
    return f"orch-sandbox:{name}"


def firewall_rules(plan: SandboxPlan) -> list[list[str]]:
    """The FORWARD rules (chain and match, without -I/-D) for the bridge.

    Node-to-node traffic is accepted (a host dockerd sets the FORWARD policy
    to DROP, which also drops bridged traffic when br_netfilter is loaded);
    anything entering or leaving the bridge towards another interface is
    dropped, so even a node that adds a default route cannot reach beyond
    the machine.
    """
    comment = ["-m", "comment", "--comment", plan.firewall_comment]
    br = plan.bridge
    return [
        ["FORWARD", "-i", br, "-o", br, *comment, "-j", "ACCEPT"],
        ["FORWARD", "-i", br, "!", "-o", br, *comment, "-j", "DROP"],
        ["FORWARD", "-o", br, "!", "-i", br, *comment, "-j", "DROP"],
    ]


# -- cgroups -------------------------------------------------------------------


def cgroup_dirs(plan: SandboxPlan, node: NodePlan, *, root: Path = CGROUP_ROOT) -> list[tuple[Path, dict[str, str]]]:
    """The cpuset cgroups to create for a pinned node and the files to write in each, in order.

    Empty for a node without CPUs. The node's daemons go into ``<cgroup>/init``
    (see ``launch_command``); its containers become siblings of ``init``.
    """
    if not node.cpus:
        return []
    cpus = format_cpus(node.cpus)
    if plan.cgroup_version == 1:
        base = root / "cpuset" / node.cgroup
        values = {"cpuset.cpus": cpus, "cpuset.mems": plan.cpuset_mems}
        return [(base, values), (base / "init", dict(values))]
    base = root / node.cgroup
    return [(base, {"cpuset.cpus": cpus}), (base / "init", {})]


def cgroup_procs(plan: SandboxPlan, node: NodePlan, *, root: Path = CGROUP_ROOT) -> Path | None:
    """The ``cgroup.procs`` file the node's PID 1 is written into, or None when not pinned."""
    dirs = cgroup_dirs(plan, node, root=root)
    return dirs[-1][0] / "cgroup.procs" if dirs else None


def cgroup_name_re(name: str) -> re.Pattern[str]:
    """Matches the cgroup (and netns) names of sandbox ``name``'s nodes, and nothing else."""
    return re.compile(rf"^orch-{re.escape(name)}-node[0-9]+$")


def launch_command(plan: SandboxPlan, node: NodePlan, *, cgroup_root: Path = CGROUP_ROOT) -> list[str]:
    """The host command that starts the node: join its netns, unshare the rest, run init.sh.

    ``--kill-child`` ties the node's PID 1 to this process; when PID 1 dies the
    kernel kills every process of the node's PID namespace. A pinned node first
    moves itself into its cpuset cgroup so everything it starts inherits it.
    """
    command = [
        "nsenter",
        f"--net=/run/netns/{node.netns}",
        "unshare",
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        str(node.init_script),
    ]
    procs = cgroup_procs(plan, node, root=cgroup_root)
    if procs is None:
        return command
    return ["sh", "-c", f'echo $$ > {shlex.quote(str(procs))} && exec "$@"', "sh", *command]
