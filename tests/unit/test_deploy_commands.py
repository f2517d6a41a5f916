"""The exact remote commands of preflight, ship, start, status and teardown (orchestrator.deploy.commands)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from orchestrator.deploy import commands as plan
from orchestrator.deploy.container import Container
from orchestrator.deploy.facts import ImageFacts
from orchestrator.deploy.remote import host_path
from orchestrator.errors import InputError
from orchestrator.inventory import parse_inventory

IMAGE = ImageFacts(tag="orch/cpu-onnxruntime:latest", id="sha256:" + "a" * 64, arch="amd64", size=500 * 2**20)


def inventory(**node_changes):
    nodes = [
        {"name": "n1", "host": "10.77.0.2", "profile": "cpu-onnxruntime", "cpus": 2},
        {"name": "n2", "host": "10.77.0.3", "profile": "cuda-onnxruntime", "gpus": 2, "data_dir": "/srv/orch data"},
    ]
    nodes[0].update(node_changes)
    return parse_inventory({"cluster": "lab", "head": "n1", "nodes": nodes}, path=Path("c.yaml"))


def test_preflight_commands_cpu_node():
    inv = inventory()
    assert plan.preflight_commands(inv, inv.node("n1")) == {
        "uname": "uname -m",
        "docker": "docker version --format '{{.Server.Version}}'",
        "docker_root": "docker info --format '{{.DockerRootDir}}'",
        "iptables": "command -v iptables",  # ray.firewall is on by default
    }
    # data_dir may not exist yet: df reads its nearest existing parent (facts never create anything).
    assert plan.df_command(inv.node("n1"), "/var/lib/docker") == (
        'd=/var/lib/orch; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; df -P -B1 "$d" /var/lib/docker'
    )
    assert plan.mkdir_state_command(inv.node("n1")) == "mkdir -p /var/lib/orch/.orch"


def test_preflight_commands_cuda_node_check_gpus_and_runtime_and_quote_odd_dirs():
    inv = inventory()
    commands = plan.preflight_commands(inv, inv.node("n2"))
    assert plan.mkdir_state_command(inv.node("n2")) == "mkdir -p '/srv/orch data/.orch'"
    assert plan.df_command(inv.node("n2"), "/d").startswith("d='/srv/orch data'; ")
    assert commands["nvidia_smi"] == "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits"
    assert commands["runtimes"] == "docker info --format '{{json .Runtimes}}'"


def test_interface_lookup_only_for_dns_hosts():
    inv = parse_inventory(
        {"cluster": "lab", "head": "a", "ray": {"interface": "eth1"},
         "nodes": [{"name": "a", "host": "a.lab", "profile": "cpu-onnxruntime"}]},
        path=Path("c.yaml"),
    )
    assert plan.preflight_commands(inv, inv.node("a"))["ray_ip"] == "ip -4 -o addr show dev eth1"
    assert plan.parse_ip_addr("3: eth1    inet 10.77.0.9/24 brd 10.77.0.255 scope global eth1\\") == "10.77.0.9"


def test_parsers():
    df = (
        "Filesystem 1-blocks Used Available Capacity Mounted on\n"
        "/dev/sda1 100 40 60 40% /\n/dev/sdb1 1000 1 999 1% /var/lib/docker\n"
    )
    assert plan.parse_df(df) == [60, 999]
    assert plan.parse_gpus("NVIDIA H100 80GB HBM3, 81559\n") == [{"model": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 * 2**20}]
    assert plan.has_nvidia_runtime('{"io.containerd.runc.v2":{},"nvidia":{"path":"nvidia-container-runtime"}}')
    assert not plan.has_nvidia_runtime('{"runc":{}}')
    alive, error = plan.parse_ray_nodes(
        'noise\n{"nodes": [{"ip": "10.77.0.2", "alive": true, "node_id": "x", "resources": {"CPU": 2.0}},'
        ' {"ip": "10.77.0.3", "alive": false, "node_id": "y", "resources": {}}]}\n'
    )
    assert list(alive) == ["10.77.0.2"] and error is None
    assert plan.parse_ray_nodes('{"error": "no Ray head"}') == ({}, "no Ray head")


def test_ship_image_commands():
    inv = inventory()
    assert plan.image_id_command(IMAGE.tag) == "docker image inspect --format '{{.Id}}' orch/cpu-onnxruntime:latest"
    assert plan.image_load_command() == "docker load"
    assert plan.record_image_command(inv.node("n2"), IMAGE.id, IMAGE.tag) == (
        f"printf '%s %s\\n' sha256:{'a' * 64} orch/cpu-onnxruntime:latest >> '/srv/orch data/.orch/images'"
    )


def test_container_commands_cpu_and_cuda():
    inv = inventory()
    n1, n2 = Container(inv, inv.node("n1")), Container(inv, inv.node("n2"))
    assert n1.inspect_command() == (
        "docker inspect --type container --format '{{.State.Status}} {{.Image}}' orch-lab-n1"
    )
    assert n1.start_command(IMAGE.tag) == (
        "docker run -d --name orch-lab-n1 --label org.orch.cluster=lab --label org.orch.node=n1 "
        "--network host --shm-size 2g --restart no -e ORCH_CACHE_DIR=/data/cache -e ORCH_NODE=n1 "
        "-e RAY_USAGE_STATS_ENABLED=0 -v /var/lib/orch:/data --entrypoint sleep orch/cpu-onnxruntime:latest infinity"
    )
    cuda = n2.start_command(IMAGE.tag)
    assert "-v '/srv/orch data:/data' --gpus all --entrypoint sleep" in cuda  # the profile's container flags
    assert n1.remove_command() == "docker rm -f orch-lab-n1"
    assert n2.exec_command(*plan.GPUS_IN_CONTAINER) == "docker exec orch-lab-n2 nvidia-smi -L"
    assert n1.exec_command("env", env={"B": "2", "A": "x y"}) == "docker exec -e 'A=x y' -e B=2 orch-lab-n1 env"


def test_ray_commands_bind_to_the_cluster_address():
    inv = inventory()
    n1, n2 = Container(inv, inv.node("n1")), Container(inv, inv.node("n2"))
    assert n1.exec_command(*plan.ray_head_argv(inv, inv.node("n1"), "10.77.0.2")) == (
        "docker exec orch-lab-n1 ray start --head --port=6379 --node-ip-address=10.77.0.2 "
        "--object-manager-port=8076 --node-manager-port=8077 --min-worker-port=10002 --max-worker-port=10999 "
        "--dashboard-agent-grpc-port=8078 --dashboard-agent-listen-port=52365 --runtime-env-agent-port=8079 "
        "--metrics-export-port=8081 --num-gpus=0 --disable-usage-stats --num-cpus=2 --include-dashboard=false"
    )
    assert n2.exec_command(*plan.ray_worker_argv(inv, inv.node("n2"), "10.77.0.3", "10.77.0.2")) == (
        "docker exec orch-lab-n2 ray start --address=10.77.0.2:6379 --node-ip-address=10.77.0.3 "
        "--object-manager-port=8076 --node-manager-port=8077 --min-worker-port=10002 --max-worker-port=10999 "
        "--dashboard-agent-grpc-port=8078 --dashboard-agent-listen-port=52365 --runtime-env-agent-port=8079 "
        "--metrics-export-port=8081 --num-gpus=2 --disable-usage-stats"
    )
    assert n2.exec_command(*plan.RAY_STOP) == "docker exec orch-lab-n2 ray stop --force"
    dash = parse_inventory(
        {"cluster": "lab", "head": "n1", "ray": {"dashboard": True},
         "nodes": [{"name": "n1", "host": "10.77.0.2", "profile": "cpu-onnxruntime"}]},
        path=Path("c.yaml"),
    )
    assert plan.ray_head_argv(dash, dash.node("n1"), "10.77.0.2")[-3:] == [
        "--include-dashboard=true", "--dashboard-host=10.77.0.2", "--dashboard-port=8265"]
    assert " ".join(plan.ray_head_argv(dash, dash.node("n1"), "10.77.0.2")).endswith(
        "--include-dashboard=true --dashboard-host=10.77.0.2 --dashboard-port=8265"
    )
    query = shlex.split(n1.exec_command(*plan.ray_nodes_argv(inv, "10.77.0.2")))
    assert query[:5] == ["docker", "exec", "orch-lab-n1", "python", "-c"] and query[-2:] == ["10.77.0.2", "6379"]


def test_teardown_commands_touch_only_orch_things():
    inv = inventory()
    assert plan.list_containers_command(inv) == (
        "docker ps -a --filter label=org.orch.cluster=lab --format '{{.Names}}'"
    )
    assert plan.remove_containers_command(["orch-lab-n1"]) == "docker rm -f orch-lab-n1"
    assert plan.loaded_images_command(inv.node("n1")) == "cat /var/lib/orch/.orch/images"
    assert plan.parse_loaded_images("sha256:a t:1\nsha256:a t:1\nbad\n") == [("sha256:a", "t:1")]
    assert plan.remove_image_command("t:1") == "docker image rm t:1"
    assert plan.manifest_exists_command(inv.node("n2")) == "test -f '/srv/orch data/.orch/manifest.json'"
    assert plan.remove_data_command(inv.node("n1")) == (
        "rm -rf -- /var/lib/orch/cache /var/lib/orch/files /var/lib/orch/runs /var/lib/orch/deploy.json "
        "/var/lib/orch/.orch && rmdir --ignore-fail-on-non-empty /var/lib/orch"
    )


def test_host_path_maps_container_paths_and_refuses_escapes():
    inv = inventory()
    assert host_path(inv.node("n1"), "/data/runs/r1") == "/var/lib/orch/runs/r1"
    assert host_path(inv.node("n1"), "runs/r1") == "/var/lib/orch/runs/r1"
    for bad in ("/etc/passwd", "/data/../etc", "/database"):
        with pytest.raises(InputError):
            host_path(inv.node("n1"), bad)
