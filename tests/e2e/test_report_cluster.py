"""The report of a 3-node sandbox run with a node killed mid-run: its lane ends, its chunks re-run on the others.

Real sshd, Docker engine and Ray per node, the driver in the head container;
the timeline is written on the head as the run goes (the kill waits until it
shows node3's answers), copied back with the run directory, and the report
is made on the controller. Skips with the reason without root, the sandbox's
tools or a Docker engine; the browser checks skip without chromium.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import yaml

from orchestrator.bench.timeline import TIMELINE_FILE, read_timeline
from tests.helpers.browser import Browser, artifacts_dir, chromium, full_page

pytestmark = pytest.mark.timeout(2400)

NAME = "rpt"
VICTIM = "node3"


def orch(*args: str, env: dict | None = None, timeout: int = 900, faults: dict | None = None) -> subprocess.CompletedProcess:
    from tests.helpers.cli import orch as run

    return run(*args, env=env, timeout=timeout, faults=faults)


@pytest.fixture(scope="module")
def cluster(cpu_image, tmp_path_factory):
    from orchestrator.sandbox import lifecycle
    from orchestrator.sandbox.state import load_state

    if load_state(NAME) is not None:
        lifecycle.down(NAME)
    folder = tmp_path_factory.mktemp("report-e2e")
    written = folder / "sandbox.yaml"
    lifecycle.up(3, name=NAME, inventory_path=written)
    try:
        data = yaml.safe_load(written.read_text())
        data["images"] = {"cpu-onnxruntime": cpu_image}
        inventory = folder / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        proc = orch("deploy", "-i", str(inventory), timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        yield {"inventory": inventory, "folder": folder}
    finally:
        orch("teardown", "-i", str(folder / "inventory.yaml"), "--images", "--data", timeout=600)
        lifecycle.down(NAME)
        assert load_state(NAME) is None


@pytest.fixture(scope="module")
def lost_run(cluster):
    """An accuracy run on 3 nodes; node3's container is killed once the head's timeline shows 2 of its answers."""
    from orchestrator.inventory import load_inventory
    from orchestrator.ssh import ParamikoTransport

    inv = load_inventory(cluster["inventory"])
    head, victim = inv.head_node, inv.node(VICTIM)
    seen = {}

    def killer() -> None:
        probe = (f"cat {head.data_dir}/runs/.*.partial/{TIMELINE_FILE} 2>/dev/null "
                 f"| grep '\"e\":\"done\"' | grep -c '\"w\":\"{VICTIM}\"'")
        with ParamikoTransport.from_inventory(inv) as transport:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                answers = transport.run(head.name, probe).stdout.strip()
                if answers.isdigit() and int(answers) >= 2:
                    seen["answers_before_kill"] = int(answers)
                    transport.run(victim.name, f"docker kill {inv.container_name(victim)}")
                    return
                time.sleep(0.3)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = cluster["folder"] / "lost"
    # Slow chunks (test hook), so the run lasts well past the kill.
    proc = orch("bench", "-i", str(cluster["inventory"]), "--json", "--mode", "accuracy", "--chunk-size", "2",
                "--out", str(out), faults={"chunk_delay": 1.0})
    thread.join(timeout=30)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert seen, "the kill never happened: node3's answers never showed in the head's timeline"
    return {"out": out, "summary": json.loads(proc.stdout), **seen}


def test_the_timeline_came_back_and_shows_the_loss_and_the_reruns(lost_run):
    out, summary = lost_run["out"], lost_run["summary"]
    assert [a["node"] for a in summary["lost_workers"]] == [VICTIM] and summary["rerun_samples"] > 0
    line = read_timeline(out / TIMELINE_FILE)
    assert [w.node for w in line.workers] == ["node1", "node2", "node3"] and line.ok is True
    assert len({c.chunk for c in line.chunks}) == len(line.chunks)  # every chunk answered once
    assert sum(c.samples for c in line.chunks) == summary["count"]
    [loss] = line.losses
    assert loss.worker == VICTIM and loss.requeued
    mine = [c for c in line.chunks if c.worker == VICTIM]
    assert len(mine) >= lost_run["answers_before_kill"] and all(c.back <= loss.t for c in mine)
    reruns = [c for c in line.chunks if c.rerun]
    assert {c.chunk for c in reruns} == set(loss.requeued) and {c.worker for c in reruns} <= {"node1", "node2"}
    assert sum(c.samples for c in reruns) == summary["rerun_samples"]
    assert all(c.back > loss.t for c in reruns)


def test_the_report_made_on_the_controller_shows_the_lane_ending_and_the_reruns(lost_run):
    from orchestrator.report import analysis

    out, summary = lost_run["out"], lost_run["summary"]
    assert summary["report"] == str(out / "report.html") and (out / "report.html").is_file()
    line = read_timeline(out / TIMELINE_FILE)
    an = analysis.analyse(line)
    lanes = {lane.worker: lane for lane in an.lanes}
    victim = lanes[VICTIM]
    assert victim.lost_at is not None and max(b.end for b in victim.bars) <= victim.lost_at + 0.05
    assert any(b.start > victim.lost_at for w in ("node1", "node2") for b in lanes[w].bars)
    page = (out / "report.html").read_text()
    assert "orch bench -i" in page  # the controller's command, not only the driver's
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium installed: the data checks above passed, the browser checks need it")
    browser = Browser(exe)
    dom = browser.dump_dom(out / "report.html")
    lane = re.search(rf'<g id="r0-gantt-lane-{VICTIM}">(.*?)</g>', dom, re.S).group(1)
    assert lane.count("<path") == len(victim.bars)
    assert f'id="r0-gantt-lost-{VICTIM}"' in dom and f'id="r0-gantt-lostwork-{VICTIM}"' in dom
    drawn = 0
    for worker in ("node1", "node2"):
        group = re.search(rf'<g id="r0-gantt-rerun-{worker}">(.*?)</g>', dom, re.S)
        drawn += group.group(1).count("<path") if group else 0
    assert drawn == an.reruns > 0
    shot, _ = full_page(browser, out / "report.html", artifacts_dir() / "report-e2e-node-lost.png", width=1280)
    print(f"\nscreenshot: {shot}")
