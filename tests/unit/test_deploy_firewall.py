"""Ray's firewall on each node: pinned ports, the exact iptables commands, idempotence, teardown."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.deploy import commands as plan
from orchestrator.deploy import deploy, teardown
from orchestrator.errors import InputError, RemoteError
from orchestrator.inventory import load_inventory, parse_inventory
from orchestrator.ssh import NodeFailures

from .deploy_fake import IMAGE, FakeCluster, FakeImages, FakeNode

ROOT = Path(__file__).resolve().parents[2]
JUMP = "-p tcp -m multiport --dports 6379,8076,8077,8078,8079,8081,52365,10002:10999 -j ORCH-lab"


def make_inventory(n=2, cluster="lab", **ray):
    nodes = [{"name": f"n{i}", "host": f"10.77.0.{i + 1}", "profile": "cpu-onnxruntime", "cpus": 2} for i in range(1, n + 1)]
    return parse_inventory(
        {"cluster": cluster, "head": "n1", "ray": ray, "images": {"cpu-onnxruntime": IMAGE.tag}, "nodes": nodes},
        path=Path("c.yaml"),
    )


def cluster(n=2):
    return FakeCluster({f"n{i}": FakeNode(ip=f"10.77.0.{i + 1}") for i in range(1, n + 1)}, head="n1")


def iptables_commands(fake, host, since=0):
    return [c.command for c in fake.transport.calls[since:] if c.host == host and c.command.startswith("iptables")]


def test_every_ray_port_is_pinned_and_named_by_the_jump():
    inv = make_inventory(dashboard=True, port=7000, min_worker_port=20000, max_worker_port=20100)
    start = " " + " ".join(plan.ray_head_argv(inv, inv.node("n1"), "10.77.0.2"))
    for flag in ("--port=7000", "--object-manager-port=8076", "--node-manager-port=8077",
                 "--dashboard-agent-grpc-port=8078", "--dashboard-agent-listen-port=52365",
                 "--runtime-env-agent-port=8079", "--metrics-export-port=8081", "--dashboard-port=8265",
                 "--min-worker-port=20000", "--max-worker-port=20100"):
        assert f" {flag}" in start
    # The dashboard's port is guarded only when the dashboard runs.
    assert plan.firewall_ports(inv) == "7000,8076,8077,8078,8079,8081,8265,52365,20000:20100"
    assert plan.firewall_ports(make_inventory()) == "6379,8076,8077,8078,8079,8081,52365,10002:10999"


def test_chain_name_fits_iptables_limit():
    assert plan.firewall_chain(make_inventory()) == "ORCH-lab"
    long_a = plan.firewall_chain(make_inventory(cluster="a-very-long-cluster-name-number-1"))
    long_b = plan.firewall_chain(make_inventory(cluster="a-very-long-cluster-name-number-2"))
    assert len(long_a) == 28 and long_a.startswith("ORCH-a-very-long-cl-") and long_a != long_b


def test_chain_rules_and_fill_commands():
    inv = make_inventory()
    assert plan.firewall_chain_rules(inv, ["10.77.0.2", "10.77.0.3", "10.77.0.2"]) == [
        "-N ORCH-lab",
        "-A ORCH-lab -s 127.0.0.0/8 -j ACCEPT",
        "-A ORCH-lab -s 10.77.0.2/32 -j ACCEPT",
        "-A ORCH-lab -s 10.77.0.3/32 -j ACCEPT",
        "-A ORCH-lab -j DROP",
    ]
    assert plan.firewall_fill_command(inv, ["10.77.0.2"], exists=True) == (
        "iptables -w -F ORCH-lab && iptables -w -A ORCH-lab -s 127.0.0.0/8 -j ACCEPT "
        "&& iptables -w -A ORCH-lab -s 10.77.0.2/32 -j ACCEPT && iptables -w -A ORCH-lab -j DROP"
    )
    assert plan.firewall_jump_check_command(inv) == f"iptables -w -C INPUT {JUMP}"
    assert plan.firewall_remove_chain_command(inv) == "iptables -w -F ORCH-lab && iptables -w -X ORCH-lab"
    listing = f"-P INPUT ACCEPT\n-A INPUT -j OTHER\n-A INPUT {JUMP}\n-A INPUT -p tcp -j ORCH-labx\n"
    assert plan.parse_jumps(inv, listing) == [JUMP.split()]
    with pytest.raises(InputError, match="IPv4 cluster addresses only, fd00::2 is not; set ray.firewall: false"):
        plan.firewall_sources(["10.77.0.2", "fd00::2"])


def test_missing_iptables_fails_preflight_naming_the_node():
    fake = cluster()
    fake.nodes["n2"].iptables = False
    with pytest.raises(NodeFailures) as info:
        deploy(make_inventory(), fake.transport, FakeImages(), sleep=lambda s: None)
    message = str(info.value)
    assert list(info.value.errors) == ["n2"]
    assert "node n2: iptables not found, and ray.firewall is on: install iptables on the node or set " \
           "ray.firewall: false in the inventory" in message and "\n" not in message
    assert not [c for c in fake.transport.calls if c.kind == "stream_in"]  # nothing shipped


def test_firewall_off_runs_no_iptables_and_needs_none():
    fake = cluster()
    for node in fake.nodes.values():
        node.iptables = False
    report = deploy(make_inventory(firewall=False), fake.transport, FakeImages(), sleep=lambda s: None)
    assert {r.firewall for r in report.nodes.values()} == {"off"}
    # Only the read that finds an old chain of orch's to remove (here: no iptables at all).
    assert iptables_commands(fake, "n2") == ["iptables -w -S INPUT"]
    assert "command -v iptables" not in fake.transport.commands("n2")
    assert all(r.ok for r in teardown(make_inventory(firewall=False), fake.transport).values())


def test_turning_the_firewall_off_removes_orchs_chain_on_the_next_deploy():
    fake = cluster()
    deploy(make_inventory(), fake.transport, FakeImages(), sleep=lambda s: None)
    fake.nodes["n2"].input.insert(0, ["-j", "OTHER"])
    report = deploy(make_inventory(firewall=False), fake.transport, FakeImages(), sleep=lambda s: None)
    assert {r.firewall for r in report.nodes.values()} == {"removed"}
    assert fake.nodes["n2"].chains == {} and fake.nodes["n2"].input == [["-j", "OTHER"]]


def test_added_node_and_changed_ports_rewrite_chain_and_jump():
    fake = cluster(3)
    two = parse_inventory(
        {"cluster": "lab", "head": "n1", "images": {"cpu-onnxruntime": IMAGE.tag},
         "nodes": [{"name": f"n{i}", "host": f"10.77.0.{i + 1}", "profile": "cpu-onnxruntime", "cpus": 2} for i in (1, 2)]},
        path=Path("c.yaml"),
    )
    deploy(two, fake.transport, FakeImages(), sleep=lambda s: None)
    before = len(fake.transport.calls)
    report = deploy(make_inventory(3, metrics_export_port=9100), fake.transport, FakeImages(), sleep=lambda s: None)
    new_jump = JUMP.replace("8081,", "").replace("52365,", "9100,52365,")
    assert iptables_commands(fake, "n2", before) == [
        # Facts: read only (the jump with the new ports is not there) ...
        "iptables -w -S INPUT",
        "iptables -w -S ORCH-lab",
        f"iptables -w -C INPUT {new_jump}",
        # ... then the plan's firewall step.
        "iptables -w -F ORCH-lab && iptables -w -A ORCH-lab -s 127.0.0.0/8 -j ACCEPT "
        "&& iptables -w -A ORCH-lab -s 10.77.0.2/32 -j ACCEPT && iptables -w -A ORCH-lab -s 10.77.0.3/32 -j ACCEPT "
        "&& iptables -w -A ORCH-lab -s 10.77.0.4/32 -j ACCEPT && iptables -w -A ORCH-lab -j DROP",
        f"iptables -w -D INPUT {JUMP}",
        f"iptables -w -I INPUT 1 {new_jump}",
    ]
    assert fake.nodes["n2"].input == [new_jump.split()]
    assert {r.firewall for r in report.nodes.values()} == {"applied"}


def test_left_out_node_keeps_its_place_in_the_chain():
    fake = cluster(3)
    fake.transport.unreachable.add("n3")
    deploy(make_inventory(3), fake.transport, FakeImages(), skip_unreachable=True, sleep=lambda s: None)
    assert ["-s", "10.77.0.4/32", "-j", "ACCEPT"] in fake.nodes["n1"].chains["ORCH-lab"]


def test_teardown_without_root_says_what_to_do():
    fake = cluster()
    original = fake.respond

    def not_root(host, command):
        if command.startswith("iptables"):
            from orchestrator.ssh import Result

            return Result(4, "", "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied\n")
        return original(host, command)

    fake.transport.responder = not_root
    results = teardown(make_inventory(), fake.transport)
    error = results["n2"].error
    assert isinstance(error, RemoteError) and "node n2: listing iptables INPUT failed (exit 4)" in str(error)
    assert "needs root" in error.hint and "ray.firewall: false" in error.hint


@pytest.mark.parametrize(
    "ray, message",
    [
        ({"metrics_export_port": 8076}, "key 'ray.metrics_export_port': 8076 is also object_manager_port"),
        ({"runtime_env_agent_port": 10500}, "key 'ray.runtime_env_agent_port': 10500 lies in the worker port range"),
        ({"dashboard": True, "dashboard_port": 6379}, "key 'ray.dashboard_port': 6379 is also port"),
    ],
)
def test_clashing_ray_ports_are_refused(ray, message):
    with pytest.raises(InputError, match=message):
        make_inventory(**ray)
    make_inventory(dashboard_port=6379)  # the dashboard's port matters only with the dashboard on


def test_example_inventory_documents_the_firewall():
    inv = load_inventory(ROOT / "inventory" / "example.yaml")
    assert inv.ray.firewall is True and inv.ray.metrics_export_port == 8081
    assert "firewall" in (ROOT / "inventory" / "example.yaml").read_text()
