"""Inventory validation: every error is one line naming the file, the node and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.errors import InputError
from orchestrator.inventory import load_inventory, schema_text

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "cluster": "lab",
    "head": "n1",
    "ssh": {"user": "root", "known_hosts": "known_hosts"},
    "nodes": [
        {"name": "n1", "host": "10.77.0.2", "profile": "cpu-onnxruntime", "cpus": 2},
        {"name": "n2", "host": "10.77.0.3", "profile": "cpu-onnxruntime"},
    ],
}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def error_of(tmp_path: Path, data) -> str:
    path = write(tmp_path, data)
    with pytest.raises(InputError) as info:
        load_inventory(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def mutate(**changes):
    import copy

    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        data[key] = value
    return data


def with_node(index: int, **changes):
    import copy

    data = copy.deepcopy(BASE)
    data["nodes"][index].update(changes)
    return data


def test_valid_inventory_resolves_paths_relative_to_the_file(tmp_path):
    inv = load_inventory(write(tmp_path, BASE))
    assert inv.ssh.known_hosts == tmp_path / "known_hosts"
    assert inv.head_node.name == "n1"
    assert inv.container_name("n2") == "orch-lab-n2"
    assert inv.ssh_port(inv.node("n2")) == 22
    assert inv.node("n1").data_dir == "/var/lib/orch"


def test_example_inventory_is_valid():
    inv = load_inventory(ROOT / "inventory" / "example.yaml")
    assert [n.name for n in inv.nodes] == ["gpu1", "cpu1", "cpu2"]
    assert inv.node("cpu2").ray_ip == "10.0.0.13"


def test_schema_file_is_up_to_date():
    assert (ROOT / "inventory" / "schema.json").read_text(encoding="utf-8") == schema_text(), (
        "inventory/schema.json is stale: run python -m orchestrator.inventory > inventory/schema.json"
    )


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_inventory(tmp_path / "nope.yaml")


def test_yaml_error_names_line(tmp_path):
    message = error_of(tmp_path, "cluster: lab\nnodes: [\n  - name: x\n")
    assert "not valid YAML" in message and "line" in message


def test_not_a_mapping(tmp_path):
    assert "mapping" in error_of(tmp_path, "- a\n- b\n")


def test_unknown_top_level_key(tmp_path):
    message = error_of(tmp_path, mutate(clustr="x"))
    assert "key 'clustr'" in message and "unknown key" in message


def test_unknown_node_key_names_the_node(tmp_path):
    message = error_of(tmp_path, with_node(1, gpu=1))
    assert "node 'n2' key 'gpu'" in message and "unknown key" in message


def test_duplicate_names(tmp_path):
    message = error_of(tmp_path, with_node(1, name="n1"))
    assert "node 'n1' key 'name'" in message and "duplicate" in message


def test_duplicate_hosts(tmp_path):
    message = error_of(tmp_path, with_node(1, host="10.77.0.2"))
    assert "node 'n2' key 'host'" in message and "already used by node 'n1'" in message


@pytest.mark.parametrize("port", [0, 70000, "ssh"])
def test_bad_node_port(tmp_path, port):
    message = error_of(tmp_path, with_node(0, port=port))
    assert "node 'n1' key 'port'" in message


def test_bad_ray_port(tmp_path):
    assert "key 'ray.port'" in error_of(tmp_path, mutate(ray={"port": 99999}))


def test_unknown_profile(tmp_path):
    message = error_of(tmp_path, with_node(1, profile="tpu-jax"))
    assert "node 'n2' key 'profile'" in message and "cpu-onnxruntime" in message


def test_head_not_a_node(tmp_path):
    message = error_of(tmp_path, mutate(head="n9"))
    assert "key 'head'" in message and "'n9' is not a node" in message


def test_password_refused_in_ssh_defaults(tmp_path):
    message = error_of(tmp_path, mutate(ssh={"password": "hunter2"}))
    assert "key 'ssh.password'" in message and "ssh-agent" in message


def test_password_refused_on_a_node(tmp_path):
    message = error_of(tmp_path, with_node(1, password="hunter2"))
    assert "node 'n2' key 'password'" in message and "identity_file" in message


def test_missing_required_key(tmp_path):
    data = mutate()
    del data["nodes"][1]["profile"]
    assert "node 'n2' key 'profile': required key is missing" in error_of(tmp_path, data)


def test_cuda_node_needs_gpus(tmp_path):
    message = error_of(tmp_path, with_node(1, profile="cuda-onnxruntime"))
    assert "node 'n2' key 'gpus'" in message and "gpus >= 1" in message


def test_shell_metacharacters_in_host_refused(tmp_path):
    assert "node 'n2' key 'host'" in error_of(tmp_path, with_node(1, host="10.0.0.1;rm -rf /"))


def test_relative_or_system_data_dir_refused(tmp_path):
    assert "node 'n1' key 'data_dir'" in error_of(tmp_path, with_node(0, data_dir="data"))
    assert "system folder" in error_of(tmp_path, with_node(0, data_dir="/etc/"))


def test_dns_host_needs_a_ray_address(tmp_path):
    message = error_of(tmp_path, with_node(1, host="n2.lab"))
    assert "node 'n2' key 'ray_ip'" in message
    load_inventory(write(tmp_path, {**with_node(1, host="n2.lab"), "ray": {"interface": "eth0"}}))


def test_worker_port_range(tmp_path):
    message = error_of(tmp_path, mutate(ray={"min_worker_port": 2000, "max_worker_port": 1000}))
    assert "key 'ray.min_worker_port'" in message
