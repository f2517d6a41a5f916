"""orch sandbox planning: names, addresses, CPU sets, files and the exact commands (golden)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from orchestrator.errors import InputError, OrchError
from orchestrator.sandbox import lifecycle, netns
from orchestrator.sandbox import files as F
from orchestrator.sandbox import plan as P
from orchestrator.sandbox.state import NodeProcess, SandboxState

ROOT = Path("/var/cache/orch/sandbox")


def _plan(nodes: int = 2, **kwargs) -> P.SandboxPlan:
    args = dict(root=ROOT, subnet_index=5, cpus_per_node=1, available_cpus=[3, 0, 1, 2])
    args.update(kwargs)
    return P.plan_sandbox("ci", nodes, **args)


def test_names_addresses_and_cpus_are_exact():
    plan = _plan()
    assert plan.bridge == "orch-1b158839"
    assert str(plan.network) == "10.77.5.0/24"
    assert plan.host_address == "10.77.5.1"
    assert plan.dir == ROOT / "ci"
    assert plan.inventory_path == ROOT / "ci" / "inventory.yaml"
    assert [(n.name, n.address, n.netns, n.veth, n.cpus, n.cgroup) for n in plan.nodes] == [
        ("node1", "10.77.5.11", "orch-ci-node1", "o1b158839-1", (0,), "orch-ci-node1"),
        ("node2", "10.77.5.12", "orch-ci-node2", "o1b158839-2", (1,), "orch-ci-node2"),
    ]
    # interface names must fit the kernel's 15 characters, even for the longest name and node count
    longest = P.plan_sandbox("a" * 16 + "-" + "b" * 15, P.MAX_NODES, root=ROOT, subnet_index=1)
    assert max(len(n.veth) for n in longest.nodes) <= 15 and len(longest.bridge) <= 15


def test_network_commands_are_golden():
    assert P.network_up_commands(_plan()) == [
        ["ip", "link", "add", "orch-1b158839", "type", "bridge"],
        ["ip", "addr", "add", "10.77.5.1/24", "dev", "orch-1b158839"],
        ["ip", "link", "set", "orch-1b158839", "up"],
        ["ip", "netns", "add", "orch-ci-node1"],
        ["ip", "link", "add", "o1b158839-1", "type", "veth", "peer", "name", "eth0", "netns", "orch-ci-node1"],
        ["ip", "-n", "orch-ci-node1", "addr", "add", "10.77.5.11/24", "dev", "eth0"],
        ["ip", "-n", "orch-ci-node1", "link", "set", "lo", "up"],
        ["ip", "-n", "orch-ci-node1", "link", "set", "eth0", "up"],
        ["ip", "link", "set", "o1b158839-1", "master", "orch-1b158839"],
        ["ip", "link", "set", "o1b158839-1", "up"],
        ["ip", "netns", "add", "orch-ci-node2"],
        ["ip", "link", "add", "o1b158839-2", "type", "veth", "peer", "name", "eth0", "netns", "orch-ci-node2"],
        ["ip", "-n", "orch-ci-node2", "addr", "add", "10.77.5.12/24", "dev", "eth0"],
        ["ip", "-n", "orch-ci-node2", "link", "set", "lo", "up"],
        ["ip", "-n", "orch-ci-node2", "link", "set", "eth0", "up"],
        ["ip", "link", "set", "o1b158839-2", "master", "orch-1b158839"],
        ["ip", "link", "set", "o1b158839-2", "up"],
    ]
    # no command ever adds a route: the nodes only know their own /24
    assert not any("route" in cmd for cmd in P.network_up_commands(_plan()))


def test_firewall_rules_accept_inside_and_drop_everything_crossing_the_bridge():
    comment = ["-m", "comment", "--comment", "orch-sandbox:ci"]
    assert P.firewall_rules(_plan()) == [
        ["FORWARD", "-i", "orch-1b158839", "-o", "orch-1b158839", *comment, "-j", "ACCEPT"],
        ["FORWARD", "-i", "orch-1b158839", "!", "-o", "orch-1b158839", *comment, "-j", "DROP"],
        ["FORWARD", "-o", "orch-1b158839", "!", "-i", "orch-1b158839", *comment, "-j", "DROP"],
    ]


def test_launch_command_pinned_v1_and_unpinned():
    plan = _plan()
    node = plan.nodes[1]
    base = [
        "nsenter", "--net=/run/netns/orch-ci-node2",
        "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child", "--mount-proc",
        "sh", "/var/cache/orch/sandbox/ci/node2/init.sh",
    ]  # fmt: skip
    assert P.launch_command(plan, node) == [
        "sh", "-c", 'echo $$ > /sys/fs/cgroup/cpuset/orch-ci-node2/init/cgroup.procs && exec "$@"', "sh", *base,
    ]  # fmt: skip
    unpinned = _plan(cpus_per_node=None)
    assert P.launch_command(unpinned, unpinned.nodes[1]) == base


def test_cgroup_dirs_v1_and_v2():
    v1 = _plan(cpus_per_node=2, cpuset_mems="0")
    assert P.cgroup_dirs(v1, v1.nodes[1]) == [
        (Path("/sys/fs/cgroup/cpuset/orch-ci-node2"), {"cpuset.cpus": "2-3", "cpuset.mems": "0"}),
        (Path("/sys/fs/cgroup/cpuset/orch-ci-node2/init"), {"cpuset.cpus": "2-3", "cpuset.mems": "0"}),
    ]
    v2 = _plan(cgroup_version=2)
    assert P.cgroup_dirs(v2, v2.nodes[0]) == [
        (Path("/sys/fs/cgroup/orch-ci-node1"), {"cpuset.cpus": "0"}),
        (Path("/sys/fs/cgroup/orch-ci-node1/init"), {}),
    ]
    assert P.cgroup_procs(v2, v2.nodes[0]) == Path("/sys/fs/cgroup/orch-ci-node1/init/cgroup.procs")
    assert P.cgroup_dirs(_plan(cpus_per_node=None), _plan(cpus_per_node=None).nodes[0]) == []


def test_cgroup_and_netns_names_of_one_sandbox_do_not_match_another():
    pattern = P.cgroup_name_re("a")
    assert pattern.match("orch-a-node1") and pattern.match("orch-a-node12")
    assert not pattern.match("orch-a-b-node1")
    assert not pattern.match("orch-a-node1-node1")
    assert not pattern.match("orch-ab-node1")


def test_cpu_assignment_and_its_errors():
    assert P.assign_cpus(2, None, [0, 1]) == [(), ()]
    assert P.assign_cpus(3, 2, [7, 6, 5, 4, 3, 2, 1, 0]) == [(0, 1), (2, 3), (4, 5)]
    with pytest.raises(InputError) as err:
        P.assign_cpus(3, 1, [0, 1])
    assert str(err.value) == (
        "--cpus-per-node 1 with --nodes 3 needs 3 CPUs but this machine offers 2 (0-1); "
        "lower --nodes or --cpus-per-node, or leave it out for no pinning"
    )
    with pytest.raises(InputError, match="--cpus-per-node 0"):
        P.assign_cpus(1, 0, [0])
    assert P.format_cpus([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"


@pytest.mark.parametrize("bad", ["", "CI", "1abc", "a_b", "a--b", "a-", "x" * 17, "a/b", "a b"])
def test_bad_names_are_refused_with_the_flag(bad):
    with pytest.raises(InputError, match="^--name "):
        P.validate_name(bad)


def test_node_count_limits():
    with pytest.raises(InputError, match="--nodes 0"):
        P.plan_sandbox("ci", 0, root=ROOT, subnet_index=1)
    with pytest.raises(InputError, match="--nodes 33"):
        P.plan_sandbox("ci", 33, root=ROOT, subnet_index=1)


def test_subnet_choice_skips_every_overlapping_network():
    preferred = P.preferred_subnet_index("ci")
    assert preferred == 76
    assert P.choose_subnet_index("ci", []) == 76
    used = [ipaddress.ip_network("10.77.76.0/24"), ipaddress.ip_network("10.77.77.128/25"), ipaddress.ip_network("fd00::/8")]
    assert P.choose_subnet_index("ci", used) == 78
    # a /16 over the whole range leaves nothing
    with pytest.raises(InputError, match="overlaps a route"):
        P.choose_subnet_index("ci", [ipaddress.ip_network("10.0.0.0/8")])


def test_used_networks_ignore_default_routes(monkeypatch):
    answers = {
        "-4": json.dumps(
            [
                {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
                {"dst": "192.0.2.0/24", "dev": "eth0"},
                {"type": "broadcast", "dst": "127.255.255.255", "dev": "lo", "table": "local"},
                {"type": "local", "dst": "10.77.9.1", "dev": "orch-x", "table": "local"},
            ]
        ),
        "-6": json.dumps([{"dst": "default", "dev": "eth0"}]),
        "addr": json.dumps([{"addr_info": [{"local": "172.17.0.1", "prefixlen": 16}]}]),
    }

    def fake_run(command, *, what, timeout=60):
        return answers["addr" if "addr" in command else command[2]]

    monkeypatch.setattr(netns, "run", fake_run)
    nets = netns.used_networks()
    assert [str(n) for n in nets] == ["192.0.2.0/24", "10.77.9.1/32", "172.17.0.0/16"]


SSHD_GOLDEN = """\
# sshd of sandbox node node1, written by orch sandbox up
ListenAddress 10.77.5.11
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
PrintMotd no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
"""


def test_sshd_config_is_golden_key_auth_only():
    assert F.sshd_config(_plan().nodes[0]) == SSHD_GOLDEN


INIT_GOLDEN = """\
#!/bin/sh
# PID 1 of sandbox ci node node1 (10.77.5.11), written by orch sandbox up.
# Runs in the node's network namespace and its own mount, UTS, IPC and PID namespaces.
set -eu
# Nothing mounted below may propagate back to the host.
mount --make-rprivate /
# Let go of the host's mounts under /run and /var/lib/docker (other nodes' netns
# handles, the host engine's layers) so this node does not pin them.
awk '$5 ~ "^/(run|var/lib/docker)/" {print $5}' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l || true
mount -t tmpfs -o mode=0755 tmpfs /run
# A sysfs of this network namespace, keeping the host's cgroup mounts.
mkdir /run/cgroup
mount --rbind /sys/fs/cgroup /run/cgroup
mount -t sysfs sysfs /sys
mount --move /run/cgroup /sys/fs/cgroup
rmdir /run/cgroup
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount --bind /var/cache/orch/sandbox/ci/hosts /etc/hosts
mount --bind /var/cache/orch/sandbox/ci/node1/etc/hostname /etc/hostname
mount --bind /var/cache/orch/sandbox/ci/node1/etc/ssh /etc/ssh
mount --bind /var/cache/orch/sandbox/ci/node1/etc/docker /etc/docker
mount --bind /var/cache/orch/sandbox/ci/node1/root /root
mount --bind /var/cache/orch/sandbox/ci/node1/srv /srv
mount --bind /var/cache/orch/sandbox/ci/node1/docker /var/lib/docker
mount --bind /var/cache/orch/sandbox/ci/node1/log /var/log
mount --bind /var/cache/orch/sandbox/ci/node1/tmp /tmp
echo node1 > /proc/sys/kernel/hostname
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -E /var/log/sshd.log &
sshd_pid=$!
/usr/sbin/dockerd --bridge=none --iptables=false --ip-masq=false --data-root=/var/lib/docker \
--exec-root=/run/docker --pidfile=/run/docker.pid --host=unix:///run/docker.sock \
--config-file=/etc/docker/daemon.json --cgroup-parent=/orch-ci-node1 --shutdown-timeout=5 \
>/var/log/dockerd.log 2>&1 &
dockerd_pid=$!
# orch sandbox down sends TERM: stop both daemons (dockerd stops its containers), then exit.
trap 'kill -TERM $dockerd_pid $sshd_pid 2>/dev/null || true; wait; exit 0' TERM INT
wait
""".replace(" \\\n", " ")


def test_init_script_is_golden():
    plan = _plan()
    assert F.init_script(plan, plan.nodes[0]) == INIT_GOLDEN
    # /tmp is bound last: the sandbox folder itself may live under the host's /tmp
    binds = [line for line in INIT_GOLDEN.splitlines() if line.startswith("mount --bind")]
    assert binds[-1].endswith(" /tmp")


def test_paths_with_spaces_are_quoted_in_the_init_script():
    plan = P.plan_sandbox("ci", 1, root=Path("/tmp/my cache"), subnet_index=5)
    assert "mount --bind '/tmp/my cache/ci/hosts' /etc/hosts" in F.init_script(plan, plan.nodes[0])


def test_hosts_known_hosts_and_ssh_config():
    plan = _plan()
    assert F.hosts_file(plan) == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        "10.77.5.1\tsandbox-host\n10.77.5.11\tnode1\n10.77.5.12\tnode2\n"
    )
    keys = {"node1": "ssh-ed25519 AAAAone root@node1", "node2": "ssh-ed25519 AAAAtwo root@node2"}
    assert F.known_hosts(plan, keys) == "10.77.5.11 ssh-ed25519 AAAAone\n10.77.5.12 ssh-ed25519 AAAAtwo\n"
    config = F.ssh_config(plan)
    assert "Host node2 10.77.5.12\n  HostName 10.77.5.12\n  User root\n" in config
    assert "UserKnownHostsFile /var/cache/orch/sandbox/ci/known_hosts\n  StrictHostKeyChecking yes" in config


def test_inventory_is_golden_and_valid_for_orch_deploy():
    from orchestrator.inventory import parse_inventory

    plan = _plan()
    data = F.inventory(plan)
    assert data == {
        "cluster": "ci",
        "ssh": {
            "user": "root",
            "port": 22,
            "identity_file": "/var/cache/orch/sandbox/ci/id_ed25519",
            "known_hosts": "/var/cache/orch/sandbox/ci/known_hosts",
        },
        "head": "node1",
        "ray": {"port": 6379},
        "nodes": [
            {"name": "node1", "host": "10.77.5.11", "profile": "cpu-onnxruntime", "cpus": 1, "data_dir": "/srv/orch", "labels": {"sandbox": "ci"}},
            {"name": "node2", "host": "10.77.5.12", "profile": "cpu-onnxruntime", "cpus": 1, "data_dir": "/srv/orch", "labels": {"sandbox": "ci"}},
        ],
    }  # fmt: skip
    inv = parse_inventory(data, path=plan.inventory_path)
    assert [n.host for n in inv.nodes] == ["10.77.5.11", "10.77.5.12"]
    assert "cpus" not in F.inventory(_plan(cpus_per_node=None))["nodes"][0]


def test_state_round_trips(tmp_path):
    plan = _plan(root=tmp_path)
    state = SandboxState(plan=plan, status="up", created_mountpoints=["/srv"], processes={"node1": NodeProcess(12, 34)})
    state.inventory_sha256 = "ab" * 32
    state.save()
    from orchestrator.sandbox.state import list_sandboxes, load_state

    again = load_state("ci", root=tmp_path)
    assert again == state
    assert list_sandboxes(root=tmp_path) == ["ci"]
    (tmp_path / "ci" / "state.json").write_text('{"version": 99}')
    with pytest.raises(InputError, match="state.json is unreadable"):
        load_state("ci", root=tmp_path)


def test_prerequisites_name_the_apt_command(monkeypatch):
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lifecycle.shutil, "which", lambda cmd, path=None: None if cmd in ("dockerd", "sshd") else f"/usr/bin/{cmd}")
    with pytest.raises(OrchError) as err:
        lifecycle.check_prerequisites()
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        "orch sandbox needs sshd, dockerd (Debian: docker.io openssh-server); install them with: "
        "apt-get update && apt-get install -y docker.io openssh-server iproute2 iptables"
    )
    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 1000)
    with pytest.raises(OrchError, match="needs root"):
        lifecycle.check_prerequisites()


def test_cli_prints_one_line_and_exits_2_when_not_root(monkeypatch, capsys):
    from orchestrator.cli import main

    monkeypatch.setattr(lifecycle.os, "geteuid", lambda: 1000)
    assert main(["sandbox", "up", "--nodes", "2", "--name", "unit"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("orch: error: orch sandbox needs root")
    assert main(["sandbox", "down", "--name", "Bad_Name"]) == 2
    assert "--name 'Bad_Name'" in capsys.readouterr().err


def test_status_of_a_missing_sandbox_says_how_to_create_one(capsys):
    from orchestrator.cli import main

    assert main(["sandbox", "status", "--name", "nosuch"]) == 2
    assert "no sandbox named 'nosuch' (none exists); create one with: orch sandbox up --nodes 3 --name nosuch" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("root", "last"),
    [
        ("/root/.cache/orch/sandbox", "/root"),  # the default cache of root
        ("/tmp/pytest-of-root/pytest-1/orch-cache0/sandbox", "/tmp"),
        ("/srv/cache/sandbox", "/srv"),
        ("/var/cache/orch/sandbox", "/tmp"),  # nothing covers it: the plain order
    ],
)
def test_the_bind_covering_the_sandbox_folder_comes_last(root, last):
    plan = P.plan_sandbox("ci", 1, root=Path(root), subnet_index=5)
    binds = F.bind_mounts(plan, plan.nodes[0])
    assert [dst for _, dst in binds][-1] == last
    assert sorted(dst for _, dst in binds) == sorted(["/etc/hosts", *(dst for _, dst in P.NODE_MOUNTS)])
    # every source is made visible before a mount can hide it
    for i, (src, _) in enumerate(binds):
        assert not any(P.covers(dst, src) for _, dst in binds[:i])


@pytest.mark.parametrize("root", ["/run/orch", "/var/run/x", "/dev/shm/orch", "/proc/1"])
def test_sandbox_folders_under_what_nodes_replace_are_refused(root):
    with pytest.raises(InputError, match="set ORCH_CACHE_DIR to a folder elsewhere"):
        P.plan_sandbox("ci", 1, root=Path(root), subnet_index=5)


def test_setup_cgroups_writes_the_cpusets_v1_and_v2(tmp_path):
    from orchestrator.sandbox import daemons

    v1_root = tmp_path / "v1"
    (v1_root / "cpuset").mkdir(parents=True)
    (v1_root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    plan = _plan(cgroup_version=1, cpuset_mems="0")
    assert daemons.setup_cgroups(plan, root=v1_root) is False
    for node, cpus in zip(plan.nodes, ("0", "1")):
        for directory in (v1_root / "cpuset" / node.cgroup, v1_root / "cpuset" / node.cgroup / "init"):
            assert (directory / "cpuset.cpus").read_text() == cpus
            assert (directory / "cpuset.mems").read_text() == "0"

    v2_root = tmp_path / "v2"
    v2_root.mkdir()
    (v2_root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (v2_root / "cgroup.subtree_control").write_text("cpu memory\n")
    plan = _plan(cgroup_version=2)
    assert daemons.setup_cgroups(plan, root=v2_root) is True  # it had to enable cpuset
    assert (v2_root / "cgroup.subtree_control").read_text() == "+cpuset"
    assert (v2_root / "orch-ci-node2" / "cpuset.cpus").read_text() == "1"
    assert (v2_root / "orch-ci-node2" / "init").is_dir()
    assert daemons.setup_cgroups(_plan(cpus_per_node=None), root=tmp_path / "absent") is False

    (v2_root / "cgroup.controllers").write_text("cpu io memory pids\n")
    with pytest.raises(OrchError, match="cpuset controller is not available"):
        daemons.setup_cgroups(plan, root=v2_root)
