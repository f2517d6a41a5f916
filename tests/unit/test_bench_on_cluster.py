"""Choosing nodes for `orch bench --inventory` and the driver command run on the head (golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.bench.config import BenchConfig
from orchestrator.bench.on_cluster import _relocate, choose_nodes, driver_argv
from orchestrator.errors import InputError
from orchestrator.inventory import parse_inventory

INVENTORY = {
    "cluster": "lab",
    "ssh": {"user": "root"},
    "head": "gpu1",
    "nodes": [
        {"name": "gpu1", "host": "10.0.0.11", "profile": "cuda-onnxruntime", "gpus": 2},
        {"name": "cpu1", "host": "10.0.0.12", "profile": "cpu-onnxruntime"},
        {"name": "cpu2", "host": "10.0.0.13", "profile": "cpu-onnxruntime"},
        {"name": "ds1", "host": "10.0.0.14", "profile": "cpu-deepsparse"},
    ],
}


@pytest.fixture
def inventory(tmp_path):
    return parse_inventory(INVENTORY, path=tmp_path / "cluster.yaml")


def test_explicit_backend_keeps_only_nodes_that_can_run_it(inventory):
    assert choose_nodes(inventory, "onnxruntime", None, source="c.yaml") == ["cpu1", "cpu2"]
    assert choose_nodes(inventory, "onnxruntime", 1, source="c.yaml") == ["cpu1"]
    assert choose_nodes(inventory, "onnxruntime-cuda", None, source="c.yaml") == ["gpu1"]
    assert choose_nodes(inventory, "deepsparse", None, source="c.yaml") == ["ds1"]


def test_auto_takes_every_node(inventory):
    assert choose_nodes(inventory, "auto", None, source="c.yaml") == ["gpu1", "cpu1", "cpu2", "ds1"]


def test_too_few_capable_nodes_is_one_clear_error(inventory):
    with pytest.raises(InputError) as err:
        choose_nodes(inventory, "onnxruntime", 3, source="c.yaml")
    assert str(err.value).startswith("--nodes 3: c.yaml has 2 node(s) that can run backend onnxruntime (cpu1, cpu2)")


def test_driver_argv_golden():
    conf = BenchConfig(nodes=2, backend="onnxruntime", mode="accuracy", count=40, batch_size=4)
    assert driver_argv(conf, ["cpu1", "cpu2"], "/data/runs/x") == [
        "orch", "bench", "--json", "--progress", "jsonl", "--force",
        "--cluster-nodes", "cpu1,cpu2",
        "--backend", "onnxruntime", "--scenario", "Offline",
        "--mode", "accuracy", "--execution", "test",
        "--model", "demo", "--batch-size", "4",
        "--out", "/data/runs/x",
        "--precision", "fp32", "--workers-per-node", "1", "--given", "",
        "--no-tuned",
        "--count", "40",
    ]  # fmt: skip
    sub = BenchConfig(mode="submission", submitter="Team", system_name="sys")
    argv = driver_argv(sub, ["a"], "/data/runs/y")
    assert argv[-6:] == ["--submitter", "Team", "--system-name", "sys", "--division", "open"]


def test_relocate_points_run_dirs_at_the_local_copy():
    summary = {"run_dir": "/data/runs/x", "runs": [{"run_dir": "/data/runs/x/accuracy"}], "model_path": "/data/models/m.onnx"}
    local = _relocate(summary, "/data/runs/x", Path("/home/u/out"), "orch bench -i c.yaml")
    assert local["run_dir"] == "/home/u/out"
    assert local["runs"][0]["run_dir"] == "/home/u/out/accuracy"
    assert local["model_path"] == "/data/models/m.onnx"  # the path used on the node stays as it was
