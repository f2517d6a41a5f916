"""Deploy as facts -> plan -> steps: golden step lists for a cold, a warm and a partly changed cluster.

The facts come from the fake cluster (``deploy_fake``) through the recording
transport; gathering them must send only read-only commands.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator.deploy import deploy, execute, prepare
from orchestrator.deploy.bundle import Bundle, bundle_file
from orchestrator.deploy.plan import CopyFiles, ShipImage, StartContainer, StartRay
from orchestrator.inventory import parse_inventory

from .deploy_fake import IMAGE, FakeCluster, FakeImages, FakeNode

# What reading facts may send: nothing here writes on a node.
READ_ONLY = re.compile(
    r"^(uname -m|docker version |docker info |docker image inspect |docker inspect --type container "
    r"|d=\S+; while \[ ! -d \"\$d\" \]; do d=\$\(dirname \"\$d\"\); done; df -P -B1 |cat |find .* -maxdepth 0 "
    r"|command -v |iptables -w -S |iptables -w -C |nvidia-smi --query-gpu|docker exec \S+ python -c )"
)


@pytest.fixture
def bundle(tmp_path):
    files = []
    for name, data in (("model.onnx", b"m" * 300), ("vocab.txt", b"[PAD]\n"), ("dev.json", b"{}")):
        (tmp_path / name).write_bytes(data)
        files.append(bundle_file(tmp_path / name))
    return Bundle(tuple(files), "demo", files[0].relative, files[1].relative, files[2].relative)


def inventory(n=3):
    nodes = [{"name": f"n{i}", "host": f"10.77.0.{i + 1}", "profile": "cpu-onnxruntime", "cpus": 2}
             for i in range(1, n + 1)]
    return parse_inventory({"cluster": "lab", "head": "n1", "images": {"cpu-onnxruntime": IMAGE.tag}, "nodes": nodes},
                           path=Path("c.yaml"))


def fake_cluster(n=3):
    return FakeCluster({f"n{i}": FakeNode(ip=f"10.77.0.{i + 1}") for i in range(1, n + 1)}, head="n1")


def steps(plan):
    """node -> [(step kind, its summary)], the shape the golden lists compare."""
    return {name: [type(s).__name__ for s in p.steps] for name, p in plan.nodes.items()}


def assert_read_only(fake, since=0):
    calls = fake.transport.calls[since:]
    assert not [c for c in calls if c.kind in ("put", "stream_in")]
    writes = [c.command for c in calls if c.command and not READ_ONLY.match(c.command)]
    assert writes == []


def test_cold_cluster_every_node_gets_every_step(bundle):
    inv, fake = inventory(), fake_cluster()
    plan = prepare(inv, fake.transport, FakeImages(), bundle=bundle)
    assert_read_only(fake)
    files = f"copy 3 files (0.0 MiB) to /var/lib/orch; write manifest and deploy.json"
    image = "ship image orch/cpu-onnxruntime:latest (0 MiB): docker save | docker load"
    chain = ("create chain ORCH-lab (loopback + 3 cluster addresses), "
             "insert the INPUT jump to ORCH-lab for Ray's ports")
    assert plan.describe() == [
        "n1 (10.77.0.2, Ray 10.77.0.2, cpu-onnxruntime):",
        f"  1. [shipping] {image}",
        f"  2. [shipping] {files}",
        "  3. [shipping] start container orch-lab-n1 (orch/cpu-onnxruntime:latest)",
        f"  4. [firewall] {chain}",
        "  5. [ray head] start the Ray head on 10.77.0.2:6379",
        "n2 (10.77.0.3, Ray 10.77.0.3, cpu-onnxruntime):",
        f"  1. [shipping] {image}",
        f"  2. [shipping] {files}",
        "  3. [shipping] start container orch-lab-n2 (orch/cpu-onnxruntime:latest)",
        f"  4. [firewall] {chain}",
        "  5. [ray workers] join Ray at 10.77.0.2:6379 from 10.77.0.3",
        "n3 (10.77.0.4, Ray 10.77.0.4, cpu-onnxruntime):",
        f"  1. [shipping] {image}",
        f"  2. [shipping] {files}",
        "  3. [shipping] start container orch-lab-n3 (orch/cpu-onnxruntime:latest)",
        f"  4. [firewall] {chain}",
        "  5. [ray workers] join Ray at 10.77.0.2:6379 from 10.77.0.4",
        "cluster: then wait until 3 nodes are in Ray with their resources (up to 180 s)",
    ]
    ship = plan.nodes["n2"].steps[0]
    assert isinstance(ship, ShipImage) and ship.image == IMAGE
    copy = plan.nodes["n2"].steps[1]
    assert isinstance(copy, CopyFiles) and [f.relative for f in copy.files] == [f.relative for f in bundle.files]
    assert json.loads(copy.deploy_json)["ray_address"] == "10.77.0.2:6379"
    assert plan.wait.restarted == ("n1", "n2", "n3") and not plan.empty
    assert plan.to_json()["nodes"]["n3"]["steps"][4] == {
        "stage": "ray workers", "step": "StartRay", "summary": "join Ray at 10.77.0.2:6379 from 10.77.0.4"}

    # Executing that plan brings the cluster up; planning again finds nothing to do.
    execute(plan, fake.transport, FakeImages(), sleep=lambda s: None)
    before = len(fake.transport.calls)
    warm = prepare(inv, fake.transport, FakeImages(), bundle=bundle)
    assert_read_only(fake, before)
    assert warm.empty and steps(warm) == {"n1": [], "n2": [], "n3": []}
    assert warm.describe() == [
        f"n{i} (10.77.0.{i + 1}, Ray 10.77.0.{i + 1}, cpu-onnxruntime): nothing to do "
        "(image, files, container, firewall, Ray kept)"
        for i in (1, 2, 3)
    ]


def test_one_worker_changed_only_it_gets_steps(bundle):
    inv, fake = inventory(), fake_cluster()
    deploy(inv, fake.transport, FakeImages(), bundle=bundle, sleep=lambda s: None)
    # n2 lost its container (and so its raylet) and one of its files, behind orch's back.
    fake.nodes["n2"].containers.clear()
    fake.nodes["n2"].ray = ""
    del fake.transport.remote_files[("n2", f"/var/lib/orch/{bundle.vocab_file}")]
    plan = prepare(inv, fake.transport, FakeImages(), bundle=bundle)
    assert steps(plan) == {"n1": [], "n2": ["CopyFiles", "StartContainer", "StartRay"], "n3": []}
    copy, container, ray = plan.nodes["n2"].steps
    assert [f.relative for f in copy.files] == [bundle.vocab_file] and copy.deploy_json is None
    assert container.replace is False and (ray.head, ray.stop_first) == (False, False)
    assert plan.wait.restarted == ("n2",)
    assert plan.describe()[2] == "  1. [shipping] copy 1 file (0.0 MiB) to /var/lib/orch; write manifest"

    before = len(fake.transport.calls)
    report = execute(plan, fake.transport, FakeImages(), sleep=lambda s: None)
    changed = {c.host for c in fake.transport.calls[before:] if c.kind == "put" or "docker run" in (c.command or "")}
    assert changed == {"n2"}
    assert [(r.container, r.ray, r.files_sent) for r in report.nodes.values()] == [
        ("kept", "kept", 0), ("started", "started", 1), ("kept", "kept", 0)]


def test_head_changed_every_worker_rejoins(bundle):
    inv, fake = inventory(), fake_cluster()
    deploy(inv, fake.transport, FakeImages(), bundle=bundle, sleep=lambda s: None)
    fake.nodes["n1"].containers["orch-lab-n1"][0] = "exited"
    fake.nodes["n1"].ray = ""
    plan = prepare(inv, fake.transport, FakeImages(), bundle=bundle)
    assert steps(plan) == {"n1": ["StartContainer", "StartRay"], "n2": ["StartRay"], "n3": ["StartRay"]}
    head = plan.nodes["n1"].steps
    assert isinstance(head[0], StartContainer) and head[0].replace  # the stopped container is replaced
    assert [(s.head, s.stop_first) for s in (head[1], plan.nodes["n2"].steps[0])] == [(True, False), (False, True)]
    assert plan.describe()[4] == "  1. [ray workers] ray stop, then join Ray at 10.77.0.2:6379 from 10.77.0.3"


def test_new_local_image_ships_and_replaces_everywhere(bundle):
    import dataclasses

    inv, fake = inventory(2), fake_cluster(2)
    deploy(inv, fake.transport, FakeImages(), bundle=bundle, sleep=lambda s: None)
    new = dataclasses.replace(IMAGE, id="sha256:" + "b" * 64)
    fake.image = new
    plan = prepare(inv, fake.transport, FakeImages(new), bundle=bundle)
    assert steps(plan) == {n: ["ShipImage", "StartContainer", "StartRay"] for n in ("n1", "n2")}
    assert all(p.steps[1].replace for p in plan.nodes.values())


def test_dry_run_prints_the_plan_and_changes_nothing(bundle, monkeypatch, capsys):
    """``orch deploy --dry-run`` through the CLI, against the fake cluster."""
    from orchestrator.cli import deploy_cmd, main

    inv, fake = inventory(2), fake_cluster(2)
    monkeypatch.setattr(deploy_cmd, "_open", lambda path, trust, console: (inv, fake.transport))
    monkeypatch.setattr("orchestrator.deploy.LocalImages", FakeImages)
    monkeypatch.setattr("orchestrator.deploy.build_bundle", lambda *a, **k: bundle)
    assert main(["deploy", "-i", "c.yaml", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert_read_only(fake)
    assert out[0] == "orch deploy --dry-run: cluster lab, 2 node(s); facts read over SSH, nothing changed"
    assert out[1] == "n1 (10.77.0.2, Ray 10.77.0.2, cpu-onnxruntime):" and len(out) == 1 + 2 * 6 + 1
    assert out[-1] == "cluster: then wait until 2 nodes are in Ray with their resources (up to 180 s)"

    assert main(["deploy", "-i", "c.yaml", "--dry-run", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in data["nodes"]["n2"]["steps"]] == [
        "ShipImage", "CopyFiles", "StartContainer", "ApplyFirewall", "StartRay"]
    assert data["empty"] is False and data["left_out"] == {}
    assert_read_only(fake)


def test_interrupt_names_the_step_each_node_was_running(bundle, monkeypatch, capsys):
    """Ctrl-C while the nodes receive their image: the CLI says what was in flight and exits 130 at once."""
    import _thread
    import threading
    import time

    from orchestrator.cli import deploy_cmd, main

    inv, fake = inventory(2), fake_cluster(2)
    release = threading.Event()

    class SlowImages(FakeImages):
        def save(self, tag):
            release.wait(30)  # a stream that takes long; the fan-out threads wait here
            raise OSError("stream closed")

    monkeypatch.setattr(deploy_cmd, "_open", lambda path, trust, console: (inv, fake.transport))
    monkeypatch.setattr("orchestrator.deploy.LocalImages", SlowImages)
    monkeypatch.setattr("orchestrator.deploy.build_bundle", lambda *a, **k: bundle)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    try:
        assert main(["deploy", "-i", "c.yaml"]) == 130
        assert time.monotonic() - started < 5  # not held up by the threads still streaming
    finally:
        release.set()
        timer.cancel()
    err = capsys.readouterr().err
    for node in ("n1", "n2"):
        assert f"{node}: interrupted during: ship image orch/cpu-onnxruntime:latest" in err
    assert "no half image carries the tag" in err and "run orch deploy again" in err
    assert "Traceback" not in err
    assert not [c for c in fake.transport.calls if c.kind == "stream_in"]


def test_the_cli_report_times_the_whole_deploy_facts_included(bundle, monkeypatch, capsys):
    from orchestrator.cli import deploy_cmd, main

    inv, fake = inventory(2), fake_cluster(2)
    slow = fake.transport.responder

    def slow_facts(host, command):  # every read takes a while; nothing else does
        if command == "uname -m":
            import time

            time.sleep(0.3)
        return slow(host, command)

    fake.transport.responder = slow_facts
    monkeypatch.setattr(deploy_cmd, "_open", lambda path, trust, console: (inv, fake.transport))
    monkeypatch.setattr("orchestrator.deploy.LocalImages", FakeImages)
    monkeypatch.setattr("orchestrator.deploy.build_bundle", lambda *a, **k: bundle)
    assert main(["deploy", "-i", "c.yaml", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seconds"] >= 0.3 and set(report["nodes"]) == {"n1", "n2"}


def test_the_live_view_is_told_the_phases_it_times(bundle):
    """DeployView measures MiB/s between the "image"/"files" phases and the next one."""
    inv, fake = inventory(2), fake_cluster(2)
    seen = []

    class Listener:
        def phase(self, node, phase, detail=""):
            seen.append((node, phase))

        def shipped(self, node, nbytes):
            pass

    deploy(inv, fake.transport, FakeImages(), bundle=bundle, listener=Listener(), sleep=lambda s: None)
    n2 = [phase for node, phase in seen if node == "n2"]
    assert n2 == ["preflight", "image", "files", "container", "firewall", "ray", "ray", "ready"]
