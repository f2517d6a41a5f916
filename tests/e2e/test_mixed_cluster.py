"""A mixed 2-node sandbox: node1 runs DeepSparse (cpu-deepsparse image), node2 ONNX Runtime.

One deploy ships each node its profile's image; ``orch bench`` with the
default ``--backend auto`` puts both nodes to work on one run, each with its
own backend; an explicit ``--backend`` keeps only the nodes that can run it;
the submission's system description says which node ran what. node1 is the
head, so the driver (loadgen, accuracy scoring) runs under the deepsparse
image's numpy 1.x while node2's answers come from numpy 2.x.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

pytestmark = pytest.mark.timeout(1800)

NAME = "e2e-mixed"
PROFILES = {"node1": "cpu-deepsparse", "node2": "cpu-onnxruntime"}
BACKENDS = {"node1": "deepsparse", "node2": "onnxruntime"}


def orch(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster(cpu_image, deepsparse_image, tmp_path_factory):
    from orchestrator.sandbox import lifecycle
    from orchestrator.sandbox.state import load_state

    if load_state(NAME) is not None:
        lifecycle.down(NAME)
    folder = tmp_path_factory.mktemp("mixed-e2e")
    written = folder / "sandbox.yaml"
    lifecycle.up(2, name=NAME, inventory_path=written)
    inventory = folder / "inventory.yaml"
    try:
        data = yaml.safe_load(written.read_text())
        for node in data["nodes"]:
            node["profile"] = PROFILES[node["name"]]
        data["images"] = {"cpu-deepsparse": deepsparse_image, "cpu-onnxruntime": cpu_image}
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        started = time.monotonic()
        proc = orch("deploy", "-i", str(inventory), "--json", timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
        print(f"\ncold deploy of a mixed 2-node cluster: {time.monotonic() - started:.1f} s")
        yield {"inventory": inventory, "folder": folder}
    finally:
        if inventory.exists():
            orch("teardown", "-i", str(inventory), "--images", "--data", timeout=600)
        lifecycle.down(NAME)
        assert load_state(NAME) is None


def bench(cluster, *args: str) -> dict:
    proc = orch("bench", "-i", str(cluster["inventory"]), "--json", *args)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _figures(result: dict) -> str:
    rows = [
        f"  {n['name']} {n['backend']}: {n['samples']} samples in {n['seconds']:.2f} s "
        f"({n['samples'] / n['seconds'] if n['seconds'] else 0:.1f} samples/s)"
        for n in result["per_node"]
    ]
    return f"{result['mode']}: {result['count']} samples, {result['samples_per_second']:.1f} samples/s overall\n" + "\n".join(rows)


def test_auto_runs_every_node_with_its_own_backend(cluster):
    folder = cluster["folder"]
    perf = bench(cluster, "--mode", "performance", "--out", str(folder / "perf"))
    print("\n" + _figures(perf))
    assert perf["backend"] == "auto" and perf["backends"] == ["deepsparse", "onnxruntime"]
    assert {n["name"]: n["backend"] for n in perf["per_node"]} == BACKENDS
    # The backend is what each worker loaded, not only what was asked for.
    assert all(n["device"]["backend"] == n["backend"] for n in perf["per_node"])
    assert all(n["samples"] > 0 for n in perf["per_node"])
    assert sum(n["samples"] for n in perf["per_node"]) == perf["count"]
    written = json.loads((folder / "perf" / "run.json").read_text())
    assert written["backends"] == perf["backends"]
    assert [(n["name"], n["backend"], n["samples"]) for n in written["per_node"]] == [
        (n["name"], n["backend"], n["samples"]) for n in perf["per_node"]
    ]
    numpy = {n["name"]: n["facts"]["frameworks"]["numpy"] for n in written["per_node"]}
    # The answers crossed numpy majors: the DeepSparse image has numpy 1.x (and the driver), the other 2.x.
    assert numpy["node1"].startswith("1.") and numpy["node2"].startswith("2."), numpy

    acc = bench(cluster, "--mode", "accuracy", "--out", str(folder / "acc"))
    print(_figures(acc))
    assert all(n["samples"] > 0 for n in acc["per_node"])
    local = orch("bench", "--mode", "accuracy", "--backend", "onnxruntime", "--json", "--out", str(folder / "acc-local"))
    assert local.returncode == 0, local.stderr[-3000:]
    reference = json.loads(local.stdout)
    # Same model and data: half the answers from DeepSparse score exactly like all from ONNX Runtime.
    assert acc["accuracy"]["examples_scored"] == reference["accuracy"]["examples_scored"] > 0
    assert (acc["accuracy"]["exact_match"], acc["accuracy"]["f1"]) == (reference["accuracy"]["exact_match"], reference["accuracy"]["f1"])


def test_explicit_backend_keeps_only_the_nodes_that_can_run_it(cluster):
    only = bench(cluster, "--backend", "onnxruntime", "--mode", "accuracy", "--out", str(cluster["folder"] / "ort"))
    assert [(n["name"], n["backend"]) for n in only["per_node"]] == [("node2", "onnxruntime")]
    assert only["backends"] == ["onnxruntime"] and only["nodes"] == 1

    proc = orch("bench", "-i", str(cluster["inventory"]), "--json", "--backend", "deepsparse", "--nodes", "2",
                "--out", str(cluster["folder"] / "ds2"))  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--nodes 2" in lines[0] and "deepsparse" in lines[0] and "node1" in lines[0]


def test_submission_says_which_node_ran_what(cluster):
    out = cluster["folder"] / "sub"
    result = bench(cluster, "--mode", "submission", "--submitter", "SCCTeam", "--system-name", "mixed2", "--out", str(out))
    system = json.loads((out / "submission" / "open" / "SCCTeam" / "systems" / "mixed2.json").read_text())
    assert system["number_of_nodes"] == "2"
    assert [r["mode"] for r in result["runs"]] == ["accuracy", "performance"]
    perf = json.loads((out / "performance" / "run.json").read_text())
    versions = {n["name"]: n["facts"]["frameworks"] for n in perf["per_node"]}
    deepsparse = f"DeepSparse {versions['node1']['deepsparse']}"
    onnxruntime = f"ONNX Runtime {versions['node2']['onnxruntime']}"
    assert deepsparse in system["framework"] and onnxruntime in system["framework"]
    assert f"node1: {deepsparse}" in system["sw_notes"] and f"node2: {onnxruntime}" in system["sw_notes"]
    assert "runs DeepSparse" in system["hw_notes"].split(";")[0] and "runs ONNX Runtime" in system["hw_notes"].split(";")[1]
    readme = (out / "submission" / "open" / "SCCTeam" / "results" / "mixed2" / "bert-99" / "Offline" / "README.md").read_text()
    assert "node1: `deepsparse`, node2: `onnxruntime`" in readme


def test_deploy_again_keeps_both_images_and_containers(cluster):
    proc = orch("deploy", "-i", str(cluster["inventory"]), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = json.loads(proc.stdout)["nodes"]
    assert {name: (r["image"], r["container"], r["ray"]) for name, r in nodes.items()} == {
        "node1": ("kept", "kept", "kept"),
        "node2": ("kept", "kept", "kept"),
    }
