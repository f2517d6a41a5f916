"""orch sandbox end to end: real namespaces, sshd and Docker engines on this machine.

Needs root, Debian's docker.io, openssh-server, iproute2 and iptables (skips
with the reason otherwise). The host's own dockerd need not run.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from orchestrator.errors import OrchError
from orchestrator.sandbox import daemons, lifecycle, netns
from orchestrator.sandbox.plan import cgroup_name_re
from orchestrator.sandbox.state import load_state

REASON = lifecycle.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"sandbox unavailable: {REASON}")

NAME = "e2e-sbx"
PINNED = len(os.sched_getaffinity(0)) >= 2


def _ssh(plan, node, *, policy="reject", known_hosts=None, **connect):
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts or plan.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy() if policy == "reject" else policy)
    args = dict(username="root", key_filename=str(plan.identity_file), look_for_keys=False, allow_agent=False, timeout=10)
    args.update(connect)
    client.connect(node.address, **args)
    return client


def _run(client, command: str, *, stdin: bytes | None = None) -> tuple[int, str, str]:
    chan_in, out, err = client.exec_command(command, timeout=120)
    if stdin is not None:
        chan_in.write(stdin)
        chan_in.channel.shutdown_write()
    code = out.channel.recv_exit_status()
    return code, out.read().decode(), err.read().decode()


def _tiny_image() -> bytes:
    """A root filesystem tar with this machine's /bin/sh and its libraries (no registry needed)."""
    sh = os.path.realpath("/bin/sh")
    libs = re.findall(r"(/\S+)", subprocess.run(["ldd", sh], capture_output=True, text=True, check=True).stdout)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(sh, arcname="bin/sh")
        for lib in libs:
            if os.path.exists(lib):
                tar.add(os.path.realpath(lib), arcname=lib.lstrip("/"))
    return buf.getvalue()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A 2-node sandbox made through the CLI (pinned to one CPU each where there are 2 CPUs)."""
    from orchestrator.cli import main

    if load_state(NAME) is not None:
        lifecycle.down(NAME)
    inventory = tmp_path_factory.mktemp("sandbox-inv") / "inventory.yaml"
    args = ["sandbox", "up", "--nodes", "2", "--name", NAME, "--inventory", str(inventory)]
    if PINNED:
        args += ["--cpus-per-node", "1"]
    started = time.monotonic()
    assert main(args) == 0
    up_seconds = time.monotonic() - started
    state = load_state(NAME)
    assert state is not None and state.status == "up"
    yield {"plan": state.plan, "state": state, "inventory": inventory, "up_seconds": up_seconds}
    lifecycle.down(NAME)  # no-op when test_down_leaves_nothing ran


def test_inventory_is_written_where_asked_and_loads(sandbox):
    from orchestrator.inventory import load_inventory

    inv = load_inventory(sandbox["inventory"])
    plan = sandbox["plan"]
    assert plan.inventory_path == sandbox["inventory"]
    assert [(n.name, n.host) for n in inv.nodes] == [(n.name, n.address) for n in plan.nodes]
    assert inv.ssh.known_hosts == plan.known_hosts and inv.ssh.identity_file == plan.identity_file


def test_ssh_verifies_host_keys_and_refuses_passwords(sandbox, tmp_path):
    import paramiko

    plan = sandbox["plan"]
    for node in plan.nodes:
        with _ssh(plan, node) as client:
            code, out, _ = _run(client, "hostname; id -u")
            assert (code, out.split()) == (0, [node.name, "0"])
    # node1's key presented for node2's address must be refused
    node1, node2 = plan.nodes[:2]
    wrong = tmp_path / "known_hosts"
    key_line = plan.known_hosts.read_text().splitlines()[0]
    wrong.write_text(key_line.replace(node1.address, node2.address, 1) + "\n")
    with pytest.raises(paramiko.BadHostKeyException):
        _ssh(plan, node2, known_hosts=wrong)
    # and passwords are not accepted at all
    with pytest.raises(paramiko.AuthenticationException):
        _ssh(plan, node1, key_filename=None, password="root")


def test_each_node_has_its_own_docker_engine(sandbox):
    plan = sandbox["plan"]
    ids = set()
    for node in plan.nodes:
        with _ssh(plan, node) as client:
            code, out, err = _run(client, "docker info --format '{{.ID}} {{.DockerRootDir}} {{.Name}}'")
            assert code == 0, err
            engine_id, root_dir, hostname = out.split()
            ids.add(engine_id)
            assert (root_dir, hostname) == ("/var/lib/docker", node.name)
        # that /var/lib/docker is the node's folder in the sandbox, not the host's
        assert (node.dir / "docker" / "image").is_dir()
    assert len(ids) == len(plan.nodes)
    # an image loaded into node1 exists in node1 only
    node1, node2 = plan.nodes[:2]
    with _ssh(plan, node1) as client:
        code, out, err = _run(client, "docker import - orch-sandbox-tiny:1", stdin=_tiny_image())
        assert code == 0, err
        code, out, err = _run(
            client,
            "docker run --rm --network host orch-sandbox-tiny:1 /bin/sh -c "
            "'while read k v; do case $k in Cpus_allowed_list:) echo $v;; esac; done < /proc/self/status'",
        )
        assert code == 0, err
        if PINNED:
            assert out.strip() == ",".join(map(str, node1.cpus))
    with _ssh(plan, node2) as client:
        assert _run(client, "docker images -q orch-sandbox-tiny")[:2] == (0, "")


def test_nodes_reach_each_other_and_nothing_routes_off_the_machine(sandbox):
    plan = sandbox["plan"]
    node1, node2 = plan.nodes[:2]
    with _ssh(plan, node1) as client:
        code, _, err = _run(client, f"bash -c 'echo > /dev/tcp/{node2.address}/22' && bash -c 'echo > /dev/tcp/node2/22'")
        assert code == 0, err
        if shutil.which("ping"):
            assert _run(client, f"ping -c 1 -W 2 {node2.address}")[0] == 0
        assert _run(client, "ip route show default") == (0, "", "")
        code, _, err = _run(client, "ip route get 8.8.8.8")
        assert code != 0 and "unreachable" in err
        code, out, _ = _run(client, "ip -o -4 addr show")
        assert sorted(re.findall(r"inet (\S+)", out)) == sorted(["127.0.0.1/8", f"{node1.address}/24"])
    # the host side holds the FORWARD rules that stop a node that adds a route itself
    rules = netns.sandbox_rules(NAME)
    assert len(rules) == 3 and any("DROP" in r and "!" in r for r in rules)


def test_status_sees_every_node_healthy(sandbox):
    st = lifecycle.status(NAME)
    assert st.bridge and st.firewall_rules == 3
    assert all(n.netns and n.running and n.ssh for n in st.nodes)


def test_up_twice_is_refused(sandbox):
    with pytest.raises(OrchError, match=f"sandbox '{NAME}' exists"):
        lifecycle.up(2, name=NAME)


def _leftovers(name: str, plan, pids: list[int]) -> list[str]:
    left = [f"netns {n}" for n in netns.sandbox_netns(name)]
    left += [f"link {link}" for link in [plan.bridge, *(n.veth for n in plan.nodes)] if netns.link_exists(link)]
    left += [f"rule {r}" for r in netns.sandbox_rules(name)]
    pattern = cgroup_name_re(name)
    left += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/*") if pattern.match(p.name)]
    left += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*") if pattern.match(p.name)]
    left += [f"pid {pid}" for pid in pids if Path(f"/proc/{pid}").exists()]
    left += [f"file {p}" for p in (plan.dir, plan.inventory_path) if p.exists()]
    return left


def test_down_leaves_nothing_and_runs_twice(sandbox, capsys):
    from orchestrator.cli import main

    plan = sandbox["plan"]
    pids = [p.pid for p in sandbox["state"].processes.values()]
    pids += [pid for node in plan.nodes for pid in netns.netns_pids(node.netns)]
    assert len(pids) >= 4 * len(plan.nodes)  # launcher, init, sshd, dockerd, containerd per node
    started = time.monotonic()
    assert main(["sandbox", "down", "--name", NAME]) == 0
    down_seconds = time.monotonic() - started
    assert _leftovers(NAME, plan, pids) == []
    assert main(["sandbox", "down", "--name", NAME]) == 0
    assert f"sandbox {NAME}: nothing to remove" in capsys.readouterr().out
    print(f"\nsandbox timings: up 2 nodes {sandbox['up_seconds']:.1f} s, down {down_seconds:.1f} s")


def test_failed_up_removes_what_it_created(monkeypatch):
    name = "e2e-fail"

    def boom(plan, processes, timeout):
        raise OrchError("simulated: node did not start")

    lifecycle.down(name)  # what an earlier, interrupted run may have left
    monkeypatch.setattr(daemons, "wait_ready", boom)
    with pytest.raises(OrchError, match="simulated"):
        lifecycle.up(2, name=name)
    from orchestrator.sandbox.plan import bridge_name
    from orchestrator.sandbox.state import sandbox_root

    assert netns.sandbox_netns(name) == [] and not netns.link_exists(bridge_name(name))
    assert netns.sandbox_rules(name) == [] and not (sandbox_root() / name).exists()


def test_a_sandbox_of_the_same_name_from_another_cache_is_left_alone(monkeypatch, tmp_path):
    name = "e2e-own"
    lifecycle.down(name, any_cache=True)
    with lifecycle.running(1, name=name) as mine:
        monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "other-cache"))
        with pytest.raises(OrchError, match=f"taken on this machine by {mine.plan.dir}"):
            lifecycle.up(1, name=name)
        kept = lifecycle.down(name)
        assert kept == [f"kept netns {mine.plan.nodes[0].netns}: it belongs to the sandbox in {mine.plan.dir}"]
        monkeypatch.undo()
        assert all(n.running and n.ssh for n in lifecycle.status(name).nodes)
    assert netns.sandbox_netns(name) == []


def test_orphans_of_another_cache_are_removed_by_name(monkeypatch, tmp_path):
    name = "e2e-orphan"
    lifecycle.down(name, any_cache=True)
    first = lifecycle.up(1, name=name)
    pids = netns.netns_pids(first.plan.nodes[0].netns)
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "other-cache"))
    # --any-cache removes a live sandbox of another cache, by its own state
    assert main_down(name, "--any-cache") == 0
    assert _leftovers(name, first.plan, pids) == []
    # and nodes whose cache folder is gone (an interrupted test session) are orphans anyone may remove
    monkeypatch.undo()
    second = lifecycle.up(1, name=name)
    (second.plan.state_file).unlink()
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "third-cache"))
    with pytest.raises(OrchError, match="exists \\(left over, no state file\\)"):
        lifecycle.up(1, name=name)
    assert any(line.startswith("netns ") for line in lifecycle.down(name))
    assert netns.sandbox_netns(name) == [] and not netns.link_exists(second.plan.bridge)
    monkeypatch.undo()
    assert lifecycle.down(name) == [f"folder {second.plan.dir}"]


def main_down(name: str, *flags: str) -> int:
    from orchestrator.cli import main

    return main(["sandbox", "down", "--name", name, *flags])


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_up_interrupted_midway_stops_at_once_and_removes_what_it_made(signame):
    """Ctrl-C (or SIGTERM) while the nodes start: exit 130/143 within seconds, nothing of the sandbox left."""
    import orchestrator.errors
    from orchestrator.sandbox.plan import bridge_name
    from orchestrator.sandbox.state import sandbox_root
    from tests.helpers.signals import interrupt_orch

    if signame == "SIGTERM" and not hasattr(orchestrator.errors, "Interrupted"):
        pytest.skip("needs the CLI's SIGTERM handler (orchestrator.errors.Interrupted, on main)")
    name = "e2e-int"
    lifecycle.down(name)
    try:
        stop = interrupt_orch(["sandbox", "up", "--nodes", "2", "--name", name],
                              lambda: bool(netns.sandbox_netns(name)), signame, ready_within=60)
    finally:
        leftover = netns.sandbox_netns(name)
        lifecycle.down(name)
    err, stopped = stop.stderr, stop.seconds
    print(f"\nsandbox up stopped {stopped:.1f} s after {signame} (exit {stop.returncode})")
    assert stop.returncode == (130 if signame == "SIGINT" else 143), err[-2000:]
    assert stopped < 10 and "Traceback" not in err
    assert f"sandbox {name}: interrupted; everything up had made was removed" in err
    assert leftover == [] and not netns.link_exists(bridge_name(name)) and not (sandbox_root() / name).exists()
