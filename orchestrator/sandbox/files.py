"""The files of a sandbox: each node's init.sh and sshd_config, /etc/hosts, known_hosts,
ssh_config and the inventory, as text computed from a ``SandboxPlan`` (``daemons`` writes them)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from orchestrator.sandbox.plan import NODE_DATA_DIR, NODE_MOUNTS, PROFILE, NodePlan, SandboxPlan, covers


def hosts_file(plan: SandboxPlan) -> str:
    """``/etc/hosts`` of every node: localhost, the host side and all nodes by name."""
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{plan.host_address}\tsandbox-host",
    ]
    lines += [f"{node.address}\t{node.name}" for node in plan.nodes]
    return "\n".join(lines) + "\n"


def sshd_config(node: NodePlan) -> str:
    """The node's ``/etc/ssh/sshd_config``: its own address and host key, key authentication only."""
    return (
        f"# sshd of sandbox node {node.name}, written by orch sandbox up\n"
        f"ListenAddress {node.address}\n"
        "Port 22\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PidFile /run/sshd.pid\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "X11Forwarding no\n"
        "PrintMotd no\n"
        "UseDNS no\n"
        # orch deploy multiplexes many channels over one connection
        "MaxSessions 64\n"
        "MaxStartups 64:30:128\n"
        "Subsystem sftp internal-sftp\n"
    )


def dockerd_command(plan: SandboxPlan, node: NodePlan) -> list[str]:
    """The node's dockerd: default socket and data root in the node's private /run and
    /var/lib/docker, no bridge, no iptables changes, containers under the node's cgroup."""
    return [
        plan.dockerd,
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--data-root=/var/lib/docker",
        "--exec-root=/run/docker",
        "--pidfile=/run/docker.pid",
        "--host=unix:///run/docker.sock",
        "--config-file=/etc/docker/daemon.json",
        f"--cgroup-parent=/{node.cgroup}",
        # down tears everything away: do not wait 15 s per container
        "--shutdown-timeout=5",
    ]


def bind_mounts(plan: SandboxPlan, node: NodePlan) -> list[tuple[Path, str]]:
    """(source on the host, target in the node) of every bind mount, in the order init.sh makes them."""
    binds = [(plan.hosts_file, "/etc/hosts")] + [(node.dir / src, dst) for src, dst in NODE_MOUNTS]
    # sorted() is stable: only a target holding the sandbox folder moves (to the end)
    return sorted(binds, key=lambda bind: covers(bind[1], plan.dir))


def init_script(plan: SandboxPlan, node: NodePlan) -> str:
    """The node's PID 1 (run by ``launch_command``): private mounts, then sshd and dockerd."""
    q = shlex.quote
    mounts = "\n".join(f"mount --bind {q(str(src))} {dst}" for src, dst in bind_mounts(plan, node))
    dockerd = " ".join(q(arg) for arg in dockerd_command(plan, node))
    return f"""#!/bin/sh
# PID 1 of sandbox {plan.name!s} node {node.name} ({node.address}), written by orch sandbox up.
# Runs in the node's network namespace and its own mount, UTS, IPC and PID namespaces.
set -eu
# Nothing mounted below may propagate back to the host.
mount --make-rprivate /
# Let go of the host's mounts under /run and /var/lib/docker (other nodes' netns
# handles, the host engine's layers) so this node does not pin them.
awk '$5 ~ "^/(run|var/lib/docker)/" {{print $5}}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l || true
mount -t tmpfs -o mode=0755 tmpfs /run
# A sysfs of this network namespace, keeping the host's cgroup mounts.
mkdir /run/cgroup
mount --rbind /sys/fs/cgroup /run/cgroup
mount -t sysfs sysfs /sys
mount --move /run/cgroup /sys/fs/cgroup
rmdir /run/cgroup
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
{mounts}
echo {node.name} > /proc/sys/kernel/hostname
mkdir -p /run/sshd
{q(plan.sshd)} -D -e -E /var/log/sshd.log &
sshd_pid=$!
{dockerd} >/var/log/dockerd.log 2>&1 &
dockerd_pid=$!
# orch sandbox down sends TERM: stop both daemons (dockerd stops its containers), then exit.
trap 'kill -TERM $dockerd_pid $sshd_pid 2>/dev/null || true; wait; exit 0' TERM INT
wait
"""


def known_hosts(plan: SandboxPlan, host_keys: Mapping[str, str]) -> str:
    """known_hosts lines for every node's address.

    Args:
        host_keys: node name -> the public host key line (``ssh-ed25519 AAAA... comment``).
    """
    lines = []
    for node in plan.nodes:
        key_type, key = host_keys[node.name].split()[:2]
        lines.append(f"{node.address} {key_type} {key}")
    return "\n".join(lines) + "\n"


def ssh_config(plan: SandboxPlan) -> str:
    """An OpenSSH client config so that ``ssh -F <dir>/ssh_config node1`` works."""
    blocks = [f"# orch sandbox {plan.name}: ssh -F {plan.ssh_config} node1\n"]
    for node in plan.nodes:
        blocks.append(
            f"Host {node.name} {node.address}\n"
            f"  HostName {node.address}\n"
            "  User root\n"
            f"  IdentityFile {plan.identity_file}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {plan.known_hosts}\n"
            "  StrictHostKeyChecking yes\n"
        )
    return "\n".join(blocks)


def inventory(plan: SandboxPlan) -> dict:
    """The inventory for ``orch deploy`` (the schema of ``orchestrator/inventory.py``)."""
    nodes = []
    for node in plan.nodes:
        entry: dict = {"name": node.name, "host": node.address, "profile": PROFILE}
        if node.cpus:
            entry["cpus"] = len(node.cpus)
        entry["data_dir"] = NODE_DATA_DIR
        entry["labels"] = {"sandbox": plan.name}
        nodes.append(entry)
    return {
        "cluster": plan.name,
        "ssh": {
            "user": "root",
            "port": 22,
            "identity_file": str(plan.identity_file),
            "known_hosts": str(plan.known_hosts),
        },
        "head": plan.nodes[0].name,
        "ray": {"port": 6379},
        "nodes": nodes,
    }
