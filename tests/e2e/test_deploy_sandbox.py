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


def _deploy(cluster, *extra, inventory=None) -> tuple[int, dict | None]:
    from orchestrator.cli import main

    out = cluster["folder"] / f"report-{time.monotonic_ns()}.json"
    code = main(["deploy", "-i", str(inventory or cluster["inventory"]), "--json", str(out), *extra])
    return code, (json.loads(out.read_text()) if out.exists() else None)


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
    from orchestrator.deploy import plan

    state = load_state(NAME)
    netns = {node.name: node.netns for node in state.plan.nodes}
    node1 = inv.node("node1").host
    for port in (inv.ray.port, inv.ray.node_manager_port, inv.ray.object_manager_port):
        assert _connects(node1, port, netns["node2"]), f"node2 cannot reach node1:{port}"
        assert _connects(node1, port, netns["node1"]), f"node1 cannot reach its own {node1}:{port}"
        assert not _connects(node1, port), f"{node1}:{port} is reachable from outside the cluster"
    assert _connects(node1, 22), "sshd on node1 should stay reachable: only Ray's ports are closed"


def test_cold_then_warm_deploy_then_ray_spans_both_nodes_then_teardown(cluster, capsys):
    import docker

    size = docker.from_env().images.get(cluster["image"]).attrs["Size"]
    code, cold = _deploy(cluster)
    assert code == 0, capsys.readouterr().err
    nodes = cold["nodes"]
    assert set(nodes) == {"node1", "node2"}
    for report in nodes.values():
        assert report["firewall"] == "applied"
        assert report["image"] == "shipped" and report["image_bytes"] >= size * 0.9
        assert report["files_sent"] >= 5 and report["container"] == "started" and report["ray"] == "started"
    print(f"\ncold deploy {cold['seconds']:.1f} s: " + ", ".join(
        f"{n} image {r['image_bytes'] / 2**20:.0f} MiB at {r['image_mib_per_s']} MiB/s, "
        f"files {r['files_bytes'] / 2**20:.1f} MiB" for n, r in nodes.items()))

    code, warm = _deploy(cluster)
    assert code == 0
    assert {(r["image"], r["container"], r["ray"], r["files_sent"], r["image_bytes"]) for r in warm["nodes"].values()} == {
        ("kept", "kept", "kept", 0, 0)
    }
    assert {r["firewall"] for r in warm["nodes"].values()} == {"kept"}
    assert warm["seconds"] < 30, warm["seconds"]
    print(f"warm deploy {warm['seconds']:.1f} s")

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
    code, off = _deploy(cluster, "--no-files", inventory=open_inventory)
    assert code == 0 and {(r["firewall"], r["ray"]) for r in off["nodes"].values()} == {("removed", "kept")}
    assert _connects(head_ip, inv.ray.port)
    code, on = _deploy(cluster, "--no-files")
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

    from orchestrator.deploy import plan

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
    code, _ = _deploy(cluster, "--no-files", inventory=inventory)
    err = capsys.readouterr().err
    assert code == 2 and "preflight failed on 1 of 3 nodes: node ghost" in err and "cannot connect" in err
    code, report = _deploy(cluster, "--no-files", "--skip-unreachable", inventory=inventory)
    assert code == 0, capsys.readouterr().err
    assert list(report["left_out"]) == ["ghost"] and set(report["nodes"]) == {"node1", "node2"}
    from orchestrator.cli import main

    assert main(["teardown", "-i", str(cluster["inventory"]), "--images", "--data"]) == 0
