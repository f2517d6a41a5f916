"""The hardware catalog: one entry per profile and backend, and everything derives from it.

The proof that adding a profile touches one file: a profile added to
``orchestrator.hardware.PROFILES`` alone is accepted by the inventory (and
its schema), placed by the bench, checked and started by deploy with its own
``docker run`` flags, and known to the image profiles.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from orchestrator import hardware
from orchestrator.errors import BackendError, InputError
from orchestrator.hardware import ProfileSpec


def test_catalog_is_consistent_and_covers_the_registry_and_images():
    from orchestrator.backends import available_backends
    from orchestrator.images.profiles import PROFILES as IMAGE_PROFILES
    from orchestrator.images.profiles import images_dir

    hardware.check_catalog()
    assert available_backends() == sorted(hardware.BACKENDS)
    assert IMAGE_PROFILES is hardware.PROFILES
    for name in hardware.PROFILES:  # every profile has its image folder
        assert (images_dir() / name / "Dockerfile").is_file(), name
    assert hardware.DEFAULT_BACKEND in hardware.BACKENDS and hardware.DEFAULT_PROFILE in hardware.PROFILES


def test_capabilities_are_declared_not_probed():
    caps = {name: (b.variable_seq_length, b.gpus, b.warmup_compile) for name, b in hardware.BACKENDS.items()}
    assert caps.pop("synthetic") == (True, False, False) and hardware.BACKENDS["synthetic"].any_profile
    assert caps == {
        "onnxruntime": (True, False, False),
        "onnxruntime-cuda": (True, True, False),
        "deepsparse": (True, False, True),
    }


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(BackendError, match="choose one of: deepsparse, onnxruntime, onnxruntime-cuda"):
        hardware.backend_spec("tensorrt")
    with pytest.raises(InputError, match="choose one of: cpu-onnxruntime, cuda-onnxruntime, cpu-deepsparse"):
        hardware.profile_spec("tpu")
    assert hardware.runs_backend("cpu-deepsparse", "auto") and not hardware.runs_backend("cpu-deepsparse", "onnxruntime")


def test_system_description_and_facts_name_every_backend_package():
    from orchestrator.facts import FRAMEWORK_PACKAGES
    from orchestrator.submission.system_desc import BACKEND_PACKAGES

    assert BACKEND_PACKAGES == {n: (b.framework, b.package) for n, b in hardware.BACKENDS.items()}
    assert {b.package for b in hardware.BACKENDS.values()} <= set(FRAMEWORK_PACKAGES)


NEW = ProfileSpec(
    "cuda-onnxruntime-ipc", "onnxruntime-cuda", "cuda", "NVIDIA GPU nodes sharing host IPC (test profile)",
    gpus=True, container_flags=("--gpus", "all", "--ipc", "host"),
)


@pytest.fixture
def new_profile(monkeypatch):
    """A profile added to the catalog, and nowhere else."""
    monkeypatch.setitem(hardware.PROFILES, NEW.name, NEW)
    return NEW


def _inventory_data():
    return {
        "cluster": "lab", "head": "g1", "images": {NEW.name: "orch/x:1"},
        "nodes": [
            {"name": "g1", "host": "10.0.0.11", "profile": NEW.name, "gpus": 2, "cpus": 8},
            {"name": "c1", "host": "10.0.0.12", "profile": "cpu-onnxruntime"},
        ],
    }


def test_a_profile_added_to_the_catalog_is_seen_everywhere(new_profile, monkeypatch):
    from orchestrator.bench.cluster import deployed_slots
    from orchestrator.bench.on_cluster import choose_nodes
    from orchestrator.deploy import commands
    from orchestrator.deploy.container import Container
    from orchestrator.images.profiles import get_profile
    from orchestrator.inventory import inventory_schema, parse_inventory

    # Inventory: accepted, in the schema, and its GPU rule applies.
    inv = parse_inventory(_inventory_data(), path=Path("c.yaml"))
    schema = inventory_schema()
    assert NEW.name in schema["$defs"]["Node"]["properties"]["profile"]["enum"]
    assert NEW.name in schema["properties"]["images"]["propertyNames"]["enum"]
    no_gpus = _inventory_data()
    del no_gpus["nodes"][0]["gpus"]
    with pytest.raises(InputError, match=f"node 'g1' key 'gpus': a {NEW.name} node needs gpus >= 1"):
        parse_inventory(no_gpus, path=Path("c.yaml"))

    # Deploy: NVIDIA checks in preflight, the profile's own docker run flags.
    g1 = inv.node("g1")
    assert "nvidia_smi" in commands.preflight_commands(inv, g1)
    assert "nvidia_smi" not in commands.preflight_commands(inv, inv.node("c1"))
    start = Container(inv, g1).start_command("orch/x:1")
    assert " --gpus all --ipc host --entrypoint sleep orch/x:1 infinity" in start
    assert "--gpus" not in Container(inv, inv.node("c1")).start_command("orch/y:1")

    # Bench: chosen for its backend, one worker per GPU.
    assert choose_nodes(inv, "onnxruntime-cuda", None, source="c.yaml") == ["g1"]
    ray = types.ModuleType("ray")
    ray.nodes = lambda: [{"Alive": True, "NodeManagerAddress": "10.0.0.11", "NodeID": "id", "Resources": {"CPU": 8.0}}]
    monkeypatch.setitem(sys.modules, "ray", ray)
    from orchestrator.records import DeployedNode, DeployRecord

    deployed = DeployRecord(cluster="c", node="g1", head="g1", model="demo", model_path="/m", vocab_path="/v",
                            dataset_path="/d", cache_dir="/c", ray_address="10.0.0.11:6379",
                            nodes=[DeployedNode(name="g1", profile=NEW.name, ray_ip="10.0.0.11", gpus=2)])
    slots = deployed_slots(deployed, ["g1"], "auto", None)
    assert [(s.worker, s.backend, s.num_gpus) for s in slots] == [
        ("g1-gpu0", "onnxruntime-cuda", 1.0), ("g1-gpu1", "onnxruntime-cuda", 1.0)]

    # Images: a profile like the others (its folder images/<name>/ holds the Dockerfile and pins).
    assert get_profile(NEW.name).repository == f"orch/{NEW.name}"
    json.dumps(schema)  # the schema stays serialisable


def test_the_committed_schema_is_the_catalogs():
    from orchestrator.inventory import schema_text

    path = Path(__file__).resolve().parents[2] / "inventory" / "schema.json"
    assert path.read_text() == schema_text()
