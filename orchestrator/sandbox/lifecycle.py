"""``up``, ``down`` and ``status`` of a sandbox: prerequisites, ordering, cleanup on failure."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InputError, OrchError
from orchestrator.fileio import atomic_write, sha256_file, sha256_text
from orchestrator.sandbox import daemons, netns
from orchestrator.sandbox.plan import (
    CGROUP_ROOT,
    DEFAULT_NAME,
    SandboxPlan,
    bridge_name,
    choose_subnet_index,
    plan_sandbox,
    validate_name,
)
from orchestrator.sandbox.state import SandboxState, list_sandboxes, load_state, sandbox_root

APT_HINT = "apt-get update && apt-get install -y docker.io openssh-server iproute2 iptables"
# command -> Debian package that provides it
REQUIRED_COMMANDS: dict[str, str] = {
    "ip": "iproute2",
    "iptables": "iptables",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "dockerd": "docker.io",
    "nsenter": "util-linux",
    "unshare": "util-linux",
}
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def check_prerequisites() -> dict[str, str]:
    """Check that this process is root and the host tools are installed.

    Returns:
        Command name -> absolute path.

    Raises:
        OrchError: not root, or commands missing (one line with the apt command).
    """
    if os.geteuid() != 0:
        raise OrchError("orch sandbox needs root (network namespaces, bridges, cgroups); run it with sudo or as root")
    found = {cmd: shutil.which(cmd, path=_SEARCH_PATH) for cmd in REQUIRED_COMMANDS}
    missing = [cmd for cmd, path in found.items() if path is None]
    if missing:
        packages = sorted({REQUIRED_COMMANDS[cmd] for cmd in missing})
        raise OrchError(
            f"orch sandbox needs {', '.join(missing)} (Debian: {' '.join(packages)}); install them with: {APT_HINT}"
        )
    return {cmd: str(path) for cmd, path in found.items()}


def unavailable_reason() -> str | None:
    """Why a sandbox cannot be made here (for tests to skip with), or None when it can."""
    try:
        check_prerequisites()
    except OrchError as exc:
        return str(exc)
    return None


def _cgroup_setup() -> tuple[int, str]:
    """The cgroup version of this machine and the memory nodes of the root cpuset (v1)."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return 2, ""
    mems = CGROUP_ROOT / "cpuset" / "cpuset.mems"
    return 1, mems.read_text().strip() if mems.exists() else "0"


_LOCK_PATH = "/run"  # every orch on this machine sees it, whatever its cache folder
_lock_depth = 0


@contextlib.contextmanager
def _host_lock():
    """Serialise sandbox creation and removal on this machine (advisory flock on /run).

    Two ``up`` at once could otherwise pick the same free subnet or names;
    reentrant so that ``up`` can call ``down`` to clean up after itself.
    """
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    fd = os.open(_LOCK_PATH, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _lock_depth = 1
        try:
            yield
        finally:
            _lock_depth = 0
    finally:
        os.close(fd)  # also releases the flock


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class UpResult:
    """A running sandbox."""

    plan: SandboxPlan
    engine_ids: dict[str, str]
    seconds: float
    enabled_cpuset_controller: bool


def _write_inventory(plan: SandboxPlan) -> str:
    """Validate the inventory against orch's schema, write it, return its sha256."""
    import yaml

    from orchestrator.inventory import parse_inventory
    from orchestrator.sandbox.files import inventory

    data = inventory(plan)
    parse_inventory(data, path=plan.inventory_path)  # the schema orch deploy reads: fail here, not there
    text = (
        f"# orch sandbox {plan.name}: {len(plan.nodes)} nodes on this machine, written by orch sandbox up.\n"
        f"# Removed by: orch sandbox down --name {plan.name}\n"
    ) + yaml.safe_dump(data, sort_keys=False)
    plan.inventory_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(plan.inventory_path, text)
    return sha256_text(text)


def _create_mountpoints(plan: SandboxPlan, state: SandboxState) -> None:
    """Create host paths the nodes mount over when this machine lacks them (recorded for down)."""
    for target in plan.host_mountpoints:
        path = Path(target)
        if path.exists():
            continue
        if target == "/etc/hostname":
            path.touch()
        else:
            path.mkdir(parents=True)
        state.created_mountpoints.append(target)
        state.save()


def up(
    nodes: int,
    *,
    name: str = DEFAULT_NAME,
    cpus_per_node: int | None = None,
    inventory_path: Path | None = None,
    ready_timeout: float = daemons.READY_TIMEOUT_S,
) -> UpResult:
    """Create and start a sandbox of ``nodes`` nodes; on any failure remove what was created.

    Args:
        nodes: number of nodes (1..32).
        name: sandbox name (names its netns, bridge, cgroups and folder).
        cpus_per_node: pin this many CPUs to each node (cgroup cpuset), or None.
        inventory_path: where to write the inventory (default: in the sandbox folder).
        ready_timeout: seconds to wait for every node's sshd and dockerd.

    Returns:
        The plan, each node's Docker engine ID and how long ``up`` took.

    Raises:
        OrchError: prerequisites missing, the sandbox exists already, bad
            flags, or a node did not start (everything created is removed first).
    """
    started = time.monotonic()
    validate_name(name)
    tools = check_prerequisites()
    with _host_lock():
        return _up(nodes, name, cpus_per_node, inventory_path, ready_timeout, tools, started)


def _up(
    nodes: int,
    name: str,
    cpus_per_node: int | None,
    inventory_path: Path | None,
    ready_timeout: float,
    tools: dict[str, str],
    started: float,
) -> UpResult:
    existing = load_state(name)
    if existing is not None:
        raise InputError(f"sandbox {name!r} exists ({existing.status}); run: orch sandbox down --name {name}")
    for left in netns.sandbox_netns(name):
        owner = _foreign_owner(left, sandbox_root() / name)
        if owner is not None:
            raise InputError(
                f"sandbox name {name!r} is taken on this machine by {owner} (another orch cache); choose another "
                f"--name, or remove it: ORCH_CACHE_DIR={owner.parent.parent} orch sandbox down --name {name}"
            )
        raise InputError(f"sandbox {name!r} exists (left over, no state file); run: orch sandbox down --name {name}")
    if inventory_path is not None:
        inventory_path = Path(inventory_path).expanduser().resolve()
        if inventory_path.exists():
            raise InputError(f"--inventory {inventory_path} exists; remove it or choose another path")
    cgroup_version, mems = _cgroup_setup()
    plan = plan_sandbox(
        name,
        nodes,
        root=sandbox_root(),
        subnet_index=choose_subnet_index(name, netns.used_networks()),
        cpus_per_node=cpus_per_node,
        available_cpus=sorted(os.sched_getaffinity(0)),
        cgroup_version=cgroup_version,
        cpuset_mems=mems,
        inventory_path=inventory_path,
        sshd=tools["sshd"],
        dockerd=tools["dockerd"],
    )
    state = SandboxState(plan=plan, started_at=_now())
    state.save()
    try:
        _create_mountpoints(plan, state)
        daemons.write_files(plan)
        netns.create_network(plan)
        netns.add_firewall(plan)
        state.enabled_cpuset_controller = daemons.setup_cgroups(plan)
        state.save()
        for node in plan.nodes:
            state.processes[node.name] = daemons.start_node(plan, node)
            state.save()
        ids = daemons.wait_ready(plan, state.processes, timeout=ready_timeout)
        state.inventory_sha256 = _write_inventory(plan)
        state.status = "up"
        state.up_seconds = round(time.monotonic() - started, 2)
        state.save()
    except BaseException as exc:
        state.status = "failed"
        state.save()
        try:
            down(name)
        except OrchError as cleanup:
            if isinstance(exc, OrchError):
                raise OrchError(f"{exc}; cleaning up also failed: {cleanup}") from exc
        raise
    return UpResult(plan, ids, time.monotonic() - started, state.enabled_cpuset_controller)


def _mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()).rstrip("/") + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix) or point == prefix[:-1]:
            mounts.append(point)
    return mounts


def _foreign_owner(netns_name: str, directory: Path) -> Path | None:
    """The folder of another orch cache's live sandbox running in ``netns_name``, or None.

    None too when the owner's state file is gone: those nodes are orphans that
    any ``down`` of the name may remove.
    """
    owner = netns.netns_owner(netns_name)
    if owner is None or owner.resolve() == directory.resolve() or not (owner / "state.json").exists():
        return None
    return owner


def down(name: str = DEFAULT_NAME, *, any_cache: bool = False) -> list[str]:
    """Remove everything sandbox ``name`` created; safe to run again (then it removes nothing).

    Resources are found from the state file and, where it is gone, by name
    (netns ``orch-NAME-node*``, the name's bridge, cgroups and iptables comment).
    A sandbox of the same name made with another orch cache (``ORCH_CACHE_DIR``)
    is left alone unless ``any_cache`` is set (tests use it to clear what an
    interrupted earlier session left).

    Returns:
        One line per thing removed (empty when there was nothing); a line
        starting with "kept " names something left on purpose.

    Raises:
        OrchError: something could not be removed (the line says what).
    """
    validate_name(name)
    check_prerequisites()
    with _host_lock():
        removed: list[str] = []
        if any_cache:
            own = sandbox_root() / name
            owners = {o for n in netns.sandbox_netns(name) if (o := _foreign_owner(n, own))}
            for owner in sorted(owners):
                removed += _down(name, owner.parent)
        return removed + _down(name, sandbox_root())


def _down(name: str, root: Path) -> list[str]:
    state = load_state(name, root)
    plan = state.plan if state else None
    directory = plan.dir if plan else root / name
    names = sorted(set(netns.sandbox_netns(name)) | ({n.netns for n in plan.nodes} if plan else set()))
    foreign = {n: owner for n in names if (owner := _foreign_owner(n, directory))}
    if foreign:
        # A sandbox of the same name from another orch cache is running: its
        # netns, bridge, cgroups and rules carry this name too. Leave them all.
        removed = [f"kept netns {n}: it belongs to the sandbox in {owner}" for n, owner in sorted(foreign.items())]
        return removed + _remove_folder(name, directory)
    removed = daemons.stop_nodes(names, state.processes if state else {})
    removed += daemons.remove_cgroups(name)
    removed += netns.delete_network(plan, name, plan.bridge if plan else bridge_name(name))
    removed += netns.delete_firewall(name)
    if state:
        for target in reversed(state.created_mountpoints):
            path = Path(target)
            try:
                if path.is_dir():
                    path.rmdir()  # only when empty: something else may have used it since
                elif path.exists() and path.stat().st_size == 0:
                    path.unlink()
                removed.append(f"mount point {target}")
            except OSError:
                pass
        inv = plan.inventory_path
        if state.inventory_sha256 and inv.exists() and not inv.is_relative_to(directory):
            if sha256_file(inv) == state.inventory_sha256:
                inv.unlink()
                removed.append(f"inventory {inv}")
            else:
                removed.append(f"kept inventory {inv}: it changed since up")
    return removed + _remove_folder(name, directory)


def _remove_folder(name: str, directory: Path) -> list[str]:
    if not directory.exists():
        return []
    leftover = _mounts_under(directory)
    if leftover:
        raise OrchError(f"sandbox {name}: {leftover[0]} is still mounted; unmount it, then run orch sandbox down again")
    shutil.rmtree(directory)
    return [f"folder {directory}"]


@dataclass(frozen=True)
class NodeStatus:
    """What ``status`` sees of one node."""

    name: str
    address: str
    cpus: tuple[int, ...]
    netns: bool
    running: bool
    ssh: bool


@dataclass(frozen=True)
class SandboxStatus:
    """What ``status`` sees of a sandbox."""

    plan: SandboxPlan
    status: str
    nodes: tuple[NodeStatus, ...]
    firewall_rules: int
    bridge: bool


def _port_open(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


def status(name: str = DEFAULT_NAME) -> SandboxStatus:
    """Look at sandbox ``name``: namespaces, processes, SSH ports, bridge, FORWARD rules.

    Raises:
        InputError: there is no such sandbox (the line lists those that exist).
    """
    validate_name(name)
    state = load_state(name)
    if state is None:
        others = list_sandboxes()
        listed = f" (existing: {', '.join(others)})" if others else " (none exists)"
        raise InputError(f"no sandbox named {name!r}{listed}; create one with: orch sandbox up --nodes 3 --name {name}")
    nodes = tuple(
        NodeStatus(
            name=node.name,
            address=node.address,
            cpus=node.cpus,
            netns=netns.netns_exists(node.netns),
            running=node.name in state.processes and daemons.is_running(state.processes[node.name]),
            ssh=_port_open(node.address),
        )
        for node in state.plan.nodes
    )
    can_read_rules = os.geteuid() == 0 and shutil.which("iptables", path=_SEARCH_PATH)
    rules = len(netns.sandbox_rules(name)) if can_read_rules else 0
    return SandboxStatus(state.plan, state.status, nodes, rules, netns.link_exists(state.plan.bridge))


@contextlib.contextmanager
def running(
    nodes: int,
    *,
    name: str = DEFAULT_NAME,
    cpus_per_node: int | None = None,
    inventory_path: Path | None = None,
):
    """A sandbox for the length of a ``with`` block (tests, benchmarks), taken down on exit, even on error.

    Yields:
        The ``UpResult`` (``.plan.inventory_path`` is the inventory for ``orch deploy``).
    """
    result = up(nodes, name=name, cpus_per_node=cpus_per_node, inventory_path=inventory_path)
    try:
        yield result
    finally:
        down(name)
