"""orch deploy end to end on a 2-node sandbox: real sshd, real Docker engines, real Ray.

Needs what the sandbox needs (root, docker.io, openssh-server, iproute2,
iptables) plus a built ``orch/cpu-onnxruntime`` image on this machine's
Docker engine (``orch images build --profile cpu-onnxruntime``); skips with
the reason otherwise. Ships the image (about 1 GB) to each node once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import yaml

from orchestrator.sandbox import lifecycle
from orchestrator.sandbox.state import load_state

REASON = lifecycle.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"sandbox unavailable: {REASON}")

NAME = "e2e-dep"


def _local_image() -> str | None:
    """The current cpu-onnxruntime image if built, else the newest one on this machine."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception:
        return None
    try:
        from orchestrator.images.plan import expected_image

        wanted = expected_image("cpu-onnxruntime")
        client.images.get(wanted)
        return wanted
    except Exception:
        pass
    images = sorted(client.images.list(name="orch/cpu-onnxruntime"), key=lambda i: i.attrs.get("Created", ""))
    tags = [t for image in reversed(images) for t in image.tags]
    return tags[0] if tags else None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    image = _local_image()
    if image is None:
        pytest.skip("no orch/cpu-onnxruntime image on this machine's Docker engine (orch images build)")
    if load_state(NAME) is not None:
        lifecycle.down(NAME)
    folder = tmp_path_factory.mktemp("deploy-e2e")
    written = folder / "sandbox.yaml"
    lifecycle.up(2, name=NAME, inventory_path=written)
    try:
        data = yaml.safe_load(written.read_text())
        data["images"] = {"cpu-onnxruntime": image}
        data["ssh"].update({"retries": 0, "connect_timeout": 3})
        inventory = folder / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        yield {"inventory": inventory, "data": data, "image": image, "folder": folder}
    finally:
        lifecycle.down(NAME)


def _deploy(cluster, capsys, *extra, inventory=None) -> tuple[int, dict | None, str]:
    """``orch deploy --json`` in this process: (exit code, the report or None, stderr)."""
    from orchestrator.cli import main

    capsys.readouterr()
    code = main(["deploy", "-i", str(inventory or cluster["inventory"]), "--json", *extra])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 and out.out.strip() else None), out.err


def _dry_run(cluster, capsys, name: str) -> list[str]:
    """``orch deploy --dry-run``'s printed plan (also kept in the test folder and shown with -s)."""
    from orchestrator.cli import main

    capsys.readouterr()
    assert main(["deploy", "-i", str(cluster["inventory"]), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    (cluster["folder"] / f"dry-run-{name}.txt").write_text("\n".join(lines) + "\n")
    with capsys.disabled():
        print(f"\n$ orch deploy -i inventory.yaml --dry-run   ({name})\n" + "\n".join(lines))
    return lines


def _nodes_untouched(inv) -> None:
    """No container, no orch image, no data_dir and no iptables chain of orch's on any node."""
    from orchestrator.deploy import commands
    from orchestrator.ssh import ParamikoTransport

    with ParamikoTransport.from_inventory(inv) as transport:
        for node in inv.nodes:
            assert transport.run(node.name, "docker ps -aq").stdout.strip() == ""
            assert transport.run(node.name, f"test -e {node.data_dir}").returncode != 0
            assert transport.run(node.name, commands.firewall_read_chain_command(inv)).returncode != 0
            for tag in inv.images.values():
                assert transport.run(node.name, f"docker image inspect {tag}").returncode != 0, tag


def _connects(ip: str, port: int, netns: str | None = None, timeout: float = 3.0) -> bool:
    """A TCP connect to ip:port from this machine, or from inside network namespace ``netns``."""
    if netns is None:
        try:
            socket.create_connection((ip, port), timeout=timeout).close()
        except OSError:
            return False
        return True
    probe = f"import socket; socket.create_connection(({ip!r}, {port}), timeout={timeout}).close()"
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", probe],
                          capture_output=True, timeout=timeout + 30).returncode == 0


def _check_firewall(inv) -> None:
    """Ray's ports on node1: closed to this machine (the bridge's host side), open to node2 and to node1 itself."""
    from orchestrator.deploy import commands as plan

    state = load_state(NAME)
    netns = {node.name: node.netns for node in state.plan.nodes}
    node1 = inv.node("node1").host
    for port in (inv.ray.port, inv.ray.node_manager_port, inv.ray.object_manager_port):
        assert _connects(node1, port, netns["node2"]), f"node2 cannot reach node1:{port}"
        assert _connects(node1, port, netns["node1"]), f"node1 cannot reach its own {node1}:{port}"
        assert not _connects(node1, port), f"{node1}:{port} is reachable from outside the cluster"
    assert _connects(node1, 22), "sshd on node1 should stay reachable: only Ray's ports are closed"


def test_dry_run_on_a_cold_cluster_prints_every_step_and_changes_nothing(cluster, capsys):
    from orchestrator.inventory import load_inventory

    lines = _dry_run(cluster, capsys, "cold")
    assert lines[0].startswith("orch deploy --dry-run: cluster ") and lines[0].endswith("facts read over SSH, nothing changed")
    for node in ("node1", "node2"):
        block = lines[lines.index(next(x for x in lines if x.startswith(f"{node} ("))):][:6]
        assert [line.split("] ")[0].strip() for line in block[1:]] == [
            "1. [shipping", "2. [shipping", "3. [shipping", "4. [firewall", "5. [ray head" if node == "node1" else "5. [ray workers"]
        assert "ship image " + cluster["image"] in block[1]
    assert lines[-1].startswith("cluster: then wait until 2 nodes are in Ray")
    _nodes_untouched(load_inventory(cluster["inventory"]))


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_deploy_interrupted_while_shipping_the_image_stops_at_once_and_leaves_no_half_image(cluster, signame):
    import orchestrator.errors
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh import ParamikoTransport
    from tests.helpers.signals import interrupt_orch

    if signame == "SIGTERM" and not hasattr(orchestrator.errors, "Interrupted"):
        pytest.skip("needs the CLI's SIGTERM handler (orchestrator.errors.Interrupted, on main)")
    inv = load_inventory(cluster["inventory"])
    with ParamikoTransport.from_inventory(inv) as transport:
        started_loading = []

        def loading() -> bool:  # well into node2's image stream
            if not started_loading and transport.run("node2", "pgrep -f 'docker load'").ok:
                started_loading.append(time.monotonic())
            return bool(started_loading) and time.monotonic() - started_loading[0] > 2

        stop = interrupt_orch(["deploy", "-i", str(cluster["inventory"])], loading, signame)
    err, stopped = stop.stderr, stop.seconds
    print(f"\ndeploy stopped {stopped:.1f} s after {signame} (exit {stop.returncode})")
    assert stop.returncode == (130 if signame == "SIGINT" else 143), err[-2000:]
    assert stopped < 10
    assert "Traceback" not in err and "interrupted during: ship image" in err
    with ParamikoTransport.from_inventory(inv) as transport:
        # docker load on the node got a cut stream: nothing carries the tag, and nothing runs.
        assert _wait_for(lambda: not transport.run("node2", "pgrep -f 'docker load'").ok, 30)
        # (node1 streams its copy at the same time and may be further along: only node2 was watched.)
        assert transport.run("node2", f"docker image inspect {cluster['image']}").returncode != 0
        assert transport.run("node2", "docker ps -aq").stdout.strip() == ""


def test_cold_then_warm_deploy_then_ray_spans_both_nodes_then_teardown(cluster, capsys):
    import docker

    size = docker.from_env().images.get(cluster["image"]).attrs["Size"]
    code, cold, err = _deploy(cluster, capsys)
    assert code == 0, err
    nodes = cold["nodes"]
    assert set(nodes) == {"node1", "node2"}
    for report in nodes.values():
        assert report["firewall"] == "applied"
        assert report["image"] == "shipped" and report["image_bytes"] >= size * 0.9
        assert report["files_sent"] >= 5 and report["container"] == "started" and report["ray"] == "started"
    with capsys.disabled():
        print(f"\ncold deploy {cold['seconds']:.1f} s: " + ", ".join(
            f"{n} image {r['image_bytes'] / 2**20:.0f} MiB at {r['image_mib_per_s']} MiB/s, "
            f"files {r['files_bytes'] / 2**20:.1f} MiB" for n, r in nodes.items()))

    code, warm, err = _deploy(cluster, capsys)
    assert code == 0, err
    assert {(r["image"], r["container"], r["ray"], r["files_sent"], r["image_bytes"]) for r in warm["nodes"].values()} == {
        ("kept", "kept", "kept", 0, 0)
    }
    assert {r["firewall"] for r in warm["nodes"].values()} == {"kept"}
    assert warm["seconds"] < 30, warm["seconds"]
    with capsys.disabled():
        print(f"warm deploy {warm['seconds']:.1f} s")
    warm_plan = _dry_run(cluster, capsys, "warm")
    assert [line.split(": ", 1)[1] for line in warm_plan[1:3]] == [
        "nothing to do (image, files, container, firewall, Ray kept)"] * 2
    assert warm_plan[-1] == "nothing to do: every node is deployed as the inventory says"

    # A Ray task lands on each node's address, from a driver in the head container.
    from orchestrator.deploy import exec_in_head, fetch_run_dir, status
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh import ParamikoTransport

    inv = load_inventory(cluster["inventory"])
    head_ip = inv.head_node.host
    _check_firewall(inv)
    # The chain is what closes the port: with ray.firewall off (warm, Ray kept) it is open to this machine.
    data = json.loads(json.dumps(cluster["data"]))
    data.setdefault("ray", {})["firewall"] = False
    open_inventory = cluster["folder"] / "firewall-off.yaml"
    open_inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    code, off, _err = _deploy(cluster, capsys, "--no-files", inventory=open_inventory)
    assert code == 0 and {(r["firewall"], r["ray"]) for r in off["nodes"].values()} == {("removed", "kept")}
    assert _connects(head_ip, inv.ray.port)
    code, on, _err = _deploy(cluster, capsys, "--no-files")
    assert code == 0 and {(r["firewall"], r["ray"]) for r in on["nodes"].values()} == {("applied", "kept")}
    _check_firewall(inv)
    script = (
        "import json, ray\n"
        f"ray.init(address='{head_ip}:6379', _node_ip_address='{head_ip}', log_to_driver=False)\n"
        "f = ray.remote(num_cpus=0)(lambda: ray.util.get_node_ip_address())\n"
        "ips = sorted(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive'])\n"
        "print(json.dumps(ray.get([f.options(resources={'node:' + ip: 0.01}).remote() for ip in ips])))\n"
    )
    with ParamikoTransport.from_inventory(inv) as transport:
        result = exec_in_head(inv, ["python", "-c", script], stream=False, transport=transport)
        assert result.ok, result.stderr[-2000:]
        assert json.loads(result.stdout.strip().splitlines()[-1]) == sorted(n.host for n in inv.nodes)

        rows = {row.name: row for row in status(inv, transport)}
        assert all(r.reachable and r.container == "running" and r.container_current and r.ray_alive for r in rows.values())

        made = exec_in_head(inv, ["sh", "-c", "mkdir -p /data/runs/t && echo 1 > /data/runs/t/a.txt && echo {} > /data/runs/t/run.json"],
                            stream=False, transport=transport)
        assert made.ok
        back = fetch_run_dir(inv, "/data/runs/t", cluster["folder"] / "run", transport=transport)
        assert sorted(p.name for p in back.iterdir()) == ["a.txt", "run.json"]

    from orchestrator.cli import main
    from orchestrator.deploy import commands as plan

    with ParamikoTransport.from_inventory(inv) as transport:
        addresses = [n.host for n in inv.nodes]
        for node in inv.nodes:
            chain = transport.run(node.name, plan.firewall_read_chain_command(inv)).stdout
            assert plan.parse_rules(chain) == plan.firewall_chain_rules(inv, addresses)
            listed = transport.run(node.name, plan.firewall_read_input_command()).stdout
            assert len(plan.parse_jumps(inv, listed)) == 1

    assert main(["teardown", "-i", str(cluster["inventory"]), "--images", "--data"]) == 0
    with ParamikoTransport.from_inventory(inv) as transport:
        for node in inv.nodes:
            assert transport.run(node.name, plan.firewall_read_chain_command(inv)).returncode != 0
            assert plan.parse_jumps(inv, transport.run(node.name, plan.firewall_read_input_command()).stdout) == []
            assert transport.run(node.name, "docker ps -aq").stdout.strip() == ""
            assert transport.run(node.name, f"docker image inspect {cluster['image']}").returncode != 0
            assert transport.run(node.name, f"test -e {node.data_dir}").returncode != 0


def test_unreachable_node_fails_deploy_unless_skipped(cluster, capsys):
    data = json.loads(json.dumps(cluster["data"]))
    subnet = data["nodes"][0]["host"].rsplit(".", 1)[0]
    # An address on the sandbox bridge that nobody answers.
    data["nodes"].append({"name": "ghost", "host": f"{subnet}.250", "profile": "cpu-onnxruntime",
                          "data_dir": "/srv/orch"})
    inventory = cluster["folder"] / "with-ghost.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    # ghost is not in known_hosts: refused before any connection.
    code, _, err = _deploy(cluster, capsys, "--no-files", inventory=inventory)
    assert code == 2 and err.strip().splitlines()[-1].startswith("orch: error: ")
    assert "has no host key for node ghost" in err
    # Trusted, it is tried, and fails the deploy unless skipped.
    code, _, err = _deploy(cluster, capsys, "--no-files", "--trust-new-hosts", inventory=inventory)
    assert code == 2 and err.strip().splitlines()[-1].startswith("orch: error: preflight: node ghost")
    assert "cannot connect" in err
    code, report, err = _deploy(cluster, capsys, "--no-files", "--skip-unreachable", "--trust-new-hosts",
                                inventory=inventory)
    assert code == 0, err
    assert list(report["left_out"]) == ["ghost"] and set(report["nodes"]) == {"node1", "node2"}
    from orchestrator.cli import main

    assert main(["teardown", "-i", str(cluster["inventory"]), "--images", "--data"]) == 0
