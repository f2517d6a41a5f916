"""Workers of a deployed mixed cluster: each node's profile picks its backend under --backend auto."""

from __future__ import annotations

import sys
import types

import pytest

from orchestrator.bench.cluster import deployed_slots
from orchestrator.errors import RunError
from orchestrator.records import DeployedNode, DeployRecord

DEPLOY = DeployRecord(
    cluster="lab", node="ds1", head="ds1", model="demo", model_path="/data/m.onnx", vocab_path="/data/v.txt",
    dataset_path="/data/d.json", cache_dir="/data/cache", ray_address="10.0.0.1:6379",
    nodes=[
        DeployedNode(name="ds1", profile="cpu-deepsparse", ray_ip="10.0.0.1", gpus=0),
        DeployedNode(name="cpu1", profile="cpu-onnxruntime", ray_ip="10.0.0.2", gpus=0),
        DeployedNode(name="gpu1", profile="cuda-onnxruntime", ray_ip="10.0.0.3", gpus=2),
    ],
)
RAY_NODES = [
    {"Alive": True, "NodeManagerAddress": "10.0.0.1", "NodeID": "id-ds1", "Resources": {"CPU": 4.0}},
    {"Alive": True, "NodeManagerAddress": "10.0.0.2", "NodeID": "id-cpu1", "Resources": {"CPU": 2.0}},
    {"Alive": True, "NodeManagerAddress": "10.0.0.3", "NodeID": "id-gpu1", "Resources": {"CPU": 8.0, "GPU": 2.0}},
]


@pytest.fixture(autouse=True)
def fake_ray(monkeypatch):
    """Only ``ray.nodes()`` is read: a stand-in module keeps the test free of a Ray start."""
    module = types.ModuleType("ray")
    module.nodes = lambda: RAY_NODES
    monkeypatch.setitem(sys.modules, "ray", module)


def test_auto_gives_each_node_its_profiles_backend():
    slots = deployed_slots(DEPLOY, ["ds1", "cpu1", "gpu1"], "auto", None)
    assert [(s.worker, s.node, s.node_id, s.backend) for s in slots] == [
        ("ds1", "ds1", "id-ds1", "deepsparse"),
        ("cpu1", "cpu1", "id-cpu1", "onnxruntime"),
        ("gpu1-gpu0", "gpu1", "id-gpu1", "onnxruntime-cuda"),
        ("gpu1-gpu1", "gpu1", "id-gpu1", "onnxruntime-cuda"),
    ]
    assert [(s.threads, s.num_gpus) for s in slots] == [(4, 0.0), (2, 0.0), (4, 1.0), (4, 1.0)]


def test_explicit_backend_runs_on_every_chosen_node():
    slots = deployed_slots(DEPLOY, ["cpu1", "gpu1"], "onnxruntime", 1)
    # A GPU node running the CPU backend is one CPU worker, not one per GPU.
    assert [(s.worker, s.backend, s.threads, s.num_gpus) for s in slots] == [
        ("cpu1", "onnxruntime", 1, 0.0),
        ("gpu1", "onnxruntime", 1, 0.0),
    ]


def test_a_node_that_has_not_joined_ray_is_named():
    nodes = [n for n in RAY_NODES if n["NodeManagerAddress"] != "10.0.0.1"]
    sys.modules["ray"].nodes = lambda: nodes
    with pytest.raises(RunError, match=r"node ds1 \(10.0.0.1\) has not joined Ray"):
        deployed_slots(DEPLOY, ["ds1"], "auto", None)
