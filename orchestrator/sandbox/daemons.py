"""Per-node files, keys, cgroups and processes: write them, start the nodes, wait, stop them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from orchestrator.errors import OrchError
from orchestrator.sandbox import netns
from orchestrator.sandbox.files import hosts_file, init_script, known_hosts, ssh_config, sshd_config
from orchestrator.sandbox.plan import CGROUP_ROOT, NodePlan, SandboxPlan, cgroup_dirs, cgroup_name_re, launch_command
from orchestrator.sandbox.state import NodeProcess

READY_TIMEOUT_S = 90.0
# Grace for the nodes' daemons after TERM. dockerd would wait 10 s per running
# container; down deletes the containers anyway, so what is left gets KILL.
STOP_TIMEOUT_S = 3.0


# -- files and keys ---------------------------------------------------------------


def _keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair at ``path`` (no passphrase); returns the public line."""
    netns.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        what=f"generating key {path}",
    )
    return path.with_name(path.name + ".pub").read_text(encoding="utf-8").strip()


def write_files(plan: SandboxPlan) -> None:
    """Write keys, known_hosts, ssh_config, /etc/hosts and every node's folder.

    The controller key is new per sandbox and is the only key a node accepts;
    each node gets its own host key, recorded in ``known_hosts``.
    """
    plan.dir.mkdir(parents=True, exist_ok=True)
    os.chmod(plan.dir, 0o700)
    client_pub = _keygen(plan.identity_file, f"orch-sandbox-{plan.name}")
    host_keys: dict[str, str] = {}
    for node in plan.nodes:
        for sub, mode in (
            ("etc/ssh", 0o755),
            ("etc/docker", 0o755),
            ("root", 0o700),
            ("root/.ssh", 0o700),
            ("srv", 0o755),
            ("docker", 0o710),
            ("log", 0o755),
            ("tmp", 0o1777),
        ):
            path = node.dir / sub
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, mode)  # mkdir's mode is masked by the umask
        host_keys[node.name] = _keygen(node.host_key, f"root@{node.name}")
        node.sshd_config.write_text(sshd_config(node), encoding="utf-8")
        (node.dir / "etc" / "docker" / "daemon.json").write_text("{}\n", encoding="utf-8")
        (node.dir / "etc" / "hostname").write_text(node.name + "\n", encoding="utf-8")
        node.authorized_keys.write_text(client_pub + "\n", encoding="utf-8")
        os.chmod(node.authorized_keys, 0o600)
        node.init_script.write_text(init_script(plan, node), encoding="utf-8")
    plan.hosts_file.write_text(hosts_file(plan), encoding="utf-8")
    plan.known_hosts.write_text(known_hosts(plan, host_keys), encoding="utf-8")
    plan.ssh_config.write_text(ssh_config(plan), encoding="utf-8")


# -- cgroups ----------------------------------------------------------------------


def setup_cgroups(plan: SandboxPlan, *, root: Path = CGROUP_ROOT) -> bool:
    """Create the cpuset cgroups of pinned nodes.

    Returns:
        True when the cpuset controller had to be enabled in the cgroup v2
        root (recorded so the report can say so; it is left enabled).

    Raises:
        OrchError: the cpuset controller is not available.
    """
    if not plan.pinned:
        return False
    enabled = False
    if plan.cgroup_version == 1:
        if not (root / "cpuset" / "cpuset.cpus").exists():
            raise OrchError(f"--cpus-per-node: no cgroup v1 cpuset hierarchy at {root / 'cpuset'}; mount it or leave the flag out")
    else:
        controllers = (root / "cgroup.controllers").read_text().split()
        if "cpuset" not in controllers:
            raise OrchError(f"--cpus-per-node: the cpuset controller is not available in {root}; leave the flag out")
        subtree = root / "cgroup.subtree_control"
        if "cpuset" not in subtree.read_text().split():
            subtree.write_text("+cpuset")
            enabled = True
    for node in plan.nodes:
        for directory, values in cgroup_dirs(plan, node, root=root):
            directory.mkdir(exist_ok=True)
            for key, value in values.items():
                (directory / key).write_text(value)
    return enabled


def remove_cgroups(name: str, *, root: Path = CGROUP_ROOT, timeout: float = 10.0) -> list[str]:
    """Remove every cgroup of sandbox ``name`` (its cpusets and the ones its dockerds made).

    Found by name in every hierarchy, deepest first; a cgroup still emptying
    right after its processes died is retried until ``timeout``.
    """
    pattern = cgroup_name_re(name)
    tops = [p for p in root.glob("*") if p.is_dir() and pattern.match(p.name)]
    tops += [p for p in root.glob("*/*") if p.is_dir() and pattern.match(p.name)]
    removed = []
    deadline = time.monotonic() + timeout
    for top in tops:
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for directory in [*dirs, top]:
            while True:
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise OrchError(f"sandbox {name}: cannot remove cgroup {directory}: {exc.strerror}") from None
                    time.sleep(0.1)
        removed.append(f"cgroup {top}")
    return removed


# -- processes ----------------------------------------------------------------------


def start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in ticks), or None when pid is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def start_node(plan: SandboxPlan, node: NodePlan) -> NodeProcess:
    """Start the node's launcher in its own session (it outlives this orch process)."""
    with open(node.launch_log, "ab") as log:
        proc = subprocess.Popen(
            launch_command(plan, node),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    started = start_time(proc.pid)
    # Popen objects are dropped on purpose: the node must keep running after
    # orch exits; ``down`` finds it by pid + start time and by its netns.
    return NodeProcess(pid=proc.pid, start_time=started or 0)


def is_running(proc: NodeProcess) -> bool:
    """Whether the recorded process still runs (a zombie counts as gone, and is reaped if ours)."""
    if start_time(proc.pid) != proc.start_time:
        return False
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    if state == "Z":
        try:
            os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not our child: init reaps it
        return False
    return True


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _probe(plan: SandboxPlan, node: NodePlan) -> str | None:
    """SSH to the node with host-key verification and ask its Docker engine for its ID.

    Returns:
        The engine ID, or None while sshd or dockerd is not ready yet.
    """
    import paramiko

    try:
        with socket.create_connection((node.address, 22), timeout=1.0):
            pass
    except OSError:
        return None
    client = paramiko.SSHClient()
    client.load_host_keys(str(plan.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            node.address,
            username="root",
            key_filename=str(plan.identity_file),
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
        _, stdout, _ = client.exec_command("docker info --format '{{.ID}}'", timeout=10)
        out = stdout.read().decode().strip()
        return out if stdout.channel.recv_exit_status() == 0 and out else None
    except (paramiko.SSHException, OSError):
        return None
    finally:
        client.close()


def wait_ready(plan: SandboxPlan, processes: dict[str, NodeProcess], *, timeout: float = READY_TIMEOUT_S) -> dict[str, str]:
    """Wait until every node answers over SSH and its own Docker engine is up.

    Returns:
        Node name -> Docker engine ID.

    Raises:
        OrchError: a node's launcher died, or a node was not ready in time;
            the line names the node and quotes the end of its logs.
    """
    ids: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(ids) < len(plan.nodes):
        for node in plan.nodes:
            if node.name in ids:
                continue
            if not is_running(processes[node.name]):
                logs = _tail(node.launch_log) or _tail(node.dockerd_log) or _tail(node.sshd_log)
                raise OrchError(f"sandbox {plan.name}: node {node.name} stopped while starting: {logs} (logs in {node.dir})")
            engine = _probe(plan, node)
            if engine:
                ids[node.name] = engine
        if len(ids) < len(plan.nodes):
            if time.monotonic() > deadline:
                late = ", ".join(n.name for n in plan.nodes if n.name not in ids)
                node = next(n for n in plan.nodes if n.name not in ids)
                raise OrchError(
                    f"sandbox {plan.name}: {late} not reachable over SSH with Docker up after {timeout:.0f} s; "
                    f"last log lines of {node.name}: {_tail(node.dockerd_log) or _tail(node.sshd_log)} (logs in {node.dir})"
                )
            time.sleep(0.2)
    return ids


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_nodes(netns_names: list[str], processes: dict[str, NodeProcess], *, timeout: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop every process of the nodes: TERM to each node's PID 1, then KILL what is left.

    Processes are found from the recorded launchers and from the namespaces
    themselves (``ip netns pids``), so nothing started inside a node survives.

    Returns:
        What was stopped, for the report.
    """
    stopped = []
    for name, proc in processes.items():
        if is_running(proc):
            for child in _children(proc.pid):  # the node's PID 1 (init.sh)
                _signal(child, signal.SIGTERM)
            stopped.append(f"node {name} (pid {proc.pid})")
    deadline = time.monotonic() + timeout
    killed = False
    while True:
        left = [pid for name in netns_names for pid in netns.netns_pids(name)]
        left += [p.pid for p in processes.values() if is_running(p)]
        if not left:
            return stopped
        if time.monotonic() > deadline:
            if killed and time.monotonic() > deadline + timeout:
                raise OrchError(f"sandbox: processes {sorted(set(left))} of the nodes survive SIGKILL; check them with ps")
            for pid in set(left):
                _signal(pid, signal.SIGKILL)
            if not killed:
                stopped.append(f"{len(set(left))} process(es) still running after {timeout:.0f} s (killed)")
            killed = True
        time.sleep(0.1)
