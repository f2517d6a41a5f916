"""What a run leaves when it stops: nothing (``orchestrator.bench.spawn``).

Real processes, no Ray: a fake "raylet" starts a fake "ray::" agent that
ignores SIGTERM and then dies, as a raylet does when Ctrl-C comes while it
starts (its agents take 60 s to exit after that). The agent must be gone when
orch returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from orchestrator.bench import spawn

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc: Linux")

# A "raylet" that starts a stubborn agent (SIGTERM ignored), says its pid, and exits.
FAKE_RAYLET = "trap '' TERM; (trap '' TERM; exec -a ray::FakeAgent sleep 300 >/dev/null 2>&1) & echo $!; sleep 0.3"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _in_fresh_process(body: str) -> dict:
    """Run ``body`` in a new Python (the subreaper flag must not touch pytest itself); its printed dict."""
    code = "import json, os, subprocess, sys, time\nfrom orchestrator.bench import spawn\n" + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own dict literal


def test_an_adopted_ray_agent_is_ended_after_its_raylet_died():
    got = _in_fresh_process(f"""
        adopted = spawn.adopt_orphans()
        raylet = subprocess.Popen(["bash", "-c", {FAKE_RAYLET!r}], stdout=subprocess.PIPE, text=True)
        agent = int(raylet.stdout.readline())
        raylet.wait()
        time.sleep(0.2)
        parent = open(f"/proc/{{agent}}/stat").read().rsplit(")", 1)[1].split()[1]
        started = time.monotonic()
        ended = spawn.end_ray_orphans(grace=0.5)
        print(dict(adopted=adopted, agent=agent, parent=int(parent), me=os.getpid(), ended=ended,
                   seconds=time.monotonic() - started))
    """)
    assert got["adopted"] and got["parent"] == got["me"], got  # handed to orch, not to init
    assert got["agent"] in got["ended"], got
    assert not _alive(got["agent"]), got
    assert got["seconds"] < 10, got


def test_without_adoption_the_agent_is_lost_to_init():
    """The control: what adopt_orphans prevents (the agent would outlive orch)."""
    got = _in_fresh_process(f"""
        raylet = subprocess.Popen(["bash", "-c", {FAKE_RAYLET!r}], stdout=subprocess.PIPE, text=True)
        agent = int(raylet.stdout.readline())
        raylet.wait()
        time.sleep(0.2)
        print(dict(agent=agent, ended=spawn.end_ray_orphans(grace=0.5)))
    """)
    try:
        assert got["ended"] == [] and _alive(got["agent"]), got
    finally:
        os.kill(got["agent"], 9)


def test_ray_descendants_only_not_other_children():
    got = _in_fresh_process("""
        other = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL)
        agent = subprocess.Popen(["bash", "-c", "exec -a ray::IDLE sleep 300"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        ended = spawn.end_ray_orphans(grace=0.5)
        alive = other.poll() is None
        other.kill()
        print(dict(ended=ended, agent=agent.pid, other_alive=alive))
    """)
    assert got["ended"] == [got["agent"]] and got["other_alive"], got


def test_reap_group_ends_what_a_group_leader_left():
    leader = subprocess.Popen(["bash", "-c", FAKE_RAYLET], stdout=subprocess.PIPE, text=True, start_new_session=True)
    agent = int(leader.stdout.readline())
    leader.wait()
    assert _alive(agent)
    started = time.monotonic()
    ended = spawn.reap_group(leader.pid, grace=0.5)
    deadline = time.monotonic() + 5
    while _alive(agent) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agent in ended and not _alive(agent)
    assert time.monotonic() - started < 10
    assert spawn.reap_group(leader.pid, grace=0.5) == []
