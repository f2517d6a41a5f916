"""The whole path on a 3-node sandbox: deploy, bench across nodes, a submission, a node lost, teardown.

Real sshd and Docker engine per node, real Ray across the nodes' addresses,
real loadgen in the head container. Skips with the reason without root,
the sandbox's tools or a Docker engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.signals import interruptible

pytestmark = pytest.mark.timeout(2400)

NAME = "e2e-bench"


def orch(*args: str, env: dict | None = None, timeout: int = 900, faults: dict | None = None) -> subprocess.CompletedProcess:
    from tests.helpers.cli import orch as run

    return run(*args, env=env, timeout=timeout, faults=faults)


@pytest.fixture(scope="module")
def cluster(cpu_image, tmp_path_factory):
    from orchestrator.sandbox import lifecycle
    from orchestrator.sandbox.state import load_state

    if load_state(NAME) is not None:
        lifecycle.down(NAME)
    folder = tmp_path_factory.mktemp("bench-e2e")
    written = folder / "sandbox.yaml"
    lifecycle.up(3, name=NAME, inventory_path=written)
    try:
        data = yaml.safe_load(written.read_text())
        data["images"] = {"cpu-onnxruntime": cpu_image}
        inventory = folder / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        started = time.monotonic()
        proc = orch("deploy", "-i", str(inventory), "--json", timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        print(f"\ncold deploy of 3 nodes: {time.monotonic() - started:.1f} s")
        yield {"inventory": inventory, "folder": folder, "data": data}
    finally:
        orch("teardown", "-i", str(folder / "inventory.yaml"), "--images", "--data", timeout=600)
        lifecycle.down(NAME)
        assert load_state(NAME) is None


def bench(cluster, *args: str, env: dict | None = None, faults: dict | None = None) -> dict:
    proc = orch("bench", "-i", str(cluster["inventory"]), "--json", *args, env=env, faults=faults)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def test_performance_and_accuracy_across_three_nodes(cluster):
    folder = cluster["folder"]
    perf = bench(cluster, "--mode", "performance", "--out", str(folder / "perf"))
    assert perf["nodes"] == 3
    assert sorted(n["name"] for n in perf["per_node"]) == ["node1", "node2", "node3"]
    assert len({n["node_ip"] for n in perf["per_node"]}) == 3  # three addresses, three hosts
    assert all(n["samples"] > 0 for n in perf["per_node"])
    assert sum(n["samples"] for n in perf["per_node"]) == perf["count"]
    assert perf["samples_per_second"] > 0
    on_disk = json.loads((folder / "perf" / "run.json").read_text())
    assert on_disk["record"] == "run" and on_disk["workers"] == 3 and on_disk["nodes"] == 3

    acc = bench(cluster, "--mode", "accuracy", "--out", str(folder / "acc"))
    local = orch("bench", "--mode", "accuracy", "--json", "--out", str(folder / "acc-local"))
    assert local.returncode == 0, local.stderr[-3000:]
    # Same model and data: the cluster scores exactly what one local worker scores.
    here = json.loads(local.stdout)["accuracy"]
    assert (acc["accuracy"]["exact_match"], acc["accuracy"]["f1"]) == (here["exact_match"], here["f1"])
    assert (folder / "acc" / "accuracy.txt").read_text().startswith('{"exact_match": ')


def test_submission_from_the_cluster_has_three_nodes(cluster):
    from orchestrator.submission.runs import pick_runs  # noqa: F401  (the module the tree is checked with)

    out = cluster["folder"] / "sub"
    # --system-meta is read on the controller and its content reaches the driver on the head.
    meta = cluster["folder"] / "meta.yaml"
    meta.write_text("cooling: liquid\nhost_networking: 100G InfiniBand\nstatus: preview\n")
    result = bench(cluster, "--mode", "submission", "--submitter", "SCCTeam", "--system-name", "sandbox3",
                   "--system-meta", str(meta), "--out", str(out))
    tarball = Path(result["submission"]["tarball"])
    assert tarball.is_file() and tarball.is_relative_to(out)
    system = json.loads((out / "submission" / "open" / "SCCTeam" / "systems" / "sandbox3.json").read_text())
    assert system["number_of_nodes"] == "3"
    assert (system["cooling"], system["host_networking"], system["status"]) == ("liquid", "100G InfiniBand", "preview")
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "open/SCCTeam/results/sandbox3/bert-99/Offline/accuracy/accuracy.txt" in names
    # Test-mode runs are let through only marked as such.
    assert result["submission"]["valid"] is False and result["submission"]["invalid_reasons"]


def test_deploy_again_with_nothing_changed_is_fast_and_restarts_nothing(cluster):
    started = time.monotonic()
    proc = orch("deploy", "-i", str(cluster["inventory"]), "--json")
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    nodes = json.loads(proc.stdout)["nodes"]
    assert {(r["image"], r["container"], r["ray"], r["files_sent"]) for r in nodes.values()} == {("kept", "kept", "kept", 0)}
    print(f"\nwarm deploy of 3 nodes: {seconds:.1f} s")
    assert seconds < 60


def test_node_container_killed_mid_run_completes_on_the_others(cluster):
    """node3's container is killed while the run is going; every sample is still answered once."""
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh import ParamikoTransport

    inv = load_inventory(cluster["inventory"])
    head = inv.head_node
    victim = inv.node("node3")
    killed = threading.Event()

    def killer() -> None:
        with ParamikoTransport.from_inventory(inv) as transport:
            # The driver writes user.conf once every worker is up; then the run is under way.
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                probe = transport.run(head.name, f"ls {head.data_dir}/runs/.*.partial/user.conf")
                if probe.returncode == 0:
                    break
                time.sleep(0.5)
            time.sleep(2)
            transport.run(victim.name, f"docker kill {inv.container_name(victim)}")
            killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = cluster["folder"] / "lost"
    # Slow chunks (test hook) so that the run lasts well past the kill.
    result = bench(cluster, "--mode", "accuracy", "--chunk-size", "2", "--out", str(out),
                   faults={"chunk_delay": 1.5})
    thread.join(timeout=30)
    assert killed.is_set()
    assert [a["node"] for a in result["lost_workers"]] == ["node3"]
    assert result["rerun_samples"] > 0
    assert sum(n["samples"] for n in result["per_node"]) == result["count"]
    raw = json.loads((out / "mlperf_log_accuracy.json").read_text())
    assert sorted(entry["qsl_idx"] for entry in raw) == list(range(result["count"]))


def test_ctrl_c_on_the_controller_stops_the_driver_on_the_head(cluster, tmp_path):
    """Ctrl-C here: exit 130, the driver in the head container stops too, what it wrote comes back as failed."""
    import os
    import signal

    from orchestrator.inventory import load_inventory
    from orchestrator.ssh import ParamikoTransport
    from tests.helpers.cli import ROOT

    inv = load_inventory(cluster["inventory"])
    head = inv.head_node
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tests.helpers.orch_with_faults", json.dumps({"chunk_delay": 1.5}),
               "bench", "-i", str(cluster["inventory"]), "--nodes", "2", "--mode", "accuracy", "--chunk-size", "2",
               "--out", "stopped"]  # node1 and node2: an earlier test killed node3's container
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=interruptible)
    with ParamikoTransport.from_inventory(inv) as transport:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if transport.run(head.name, f"ls {head.data_dir}/runs/.*.partial/user.conf").returncode == 0:
                break
            time.sleep(0.5)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("orch: error:")]
        assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
        failed = sorted(tmp_path.glob("stopped.failed-*"))
        assert len(failed) == 1 and not list(failed[0].rglob("run.json"))
        assert (failed[0] / "mlperf_log_detail.txt").is_file()  # what the driver wrote came back
        # The driver is gone from the head container, and so are its workers' chunks.
        # (The image has no procps: read /proc with the image's own Python.)
        # b'orch\\x00driver' matches the driver's argv (NUL-separated), never this probe's own text.
        probe = ("import pathlib; print(sum(1 for p in pathlib.Path('/proc').glob('[0-9]*/cmdline') "
                 "if b'orch\\x00driver' in p.read_bytes()))")
        drivers = transport.run(head.name, f"docker exec {inv.container_name(head)} python3 -c \"{probe}\"")
        assert drivers.ok and drivers.stdout.strip() == "0", (drivers.stdout, drivers.stderr)
        result = transport.run(head.name, f"cat {head.data_dir}/runs/*.result.json")
        assert '"ok": false' in result.stdout and "Interrupted" in result.stdout
