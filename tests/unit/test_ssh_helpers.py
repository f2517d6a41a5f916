"""remote_cmd quoting, fan-out failure aggregation, the recording transport."""

from __future__ import annotations

import shlex
import threading

import pytest

from orchestrator.errors import RemoteError
from orchestrator.ssh import NodeFailures, RecordingTransport, Result, check, fan_out, raise_failures, remote_cmd


@pytest.mark.parametrize(
    "value",
    ["plain", "with space", "it's", "$(reboot)", "`id`", "a;b", "x|y", "*", "", "new\nline", "--flag=1", "é"],
)
def test_remote_cmd_quotes_every_value_so_the_shell_sees_one_word(value):
    command = remote_cmd("echo", value, "tail")
    assert shlex.split(command) == ["echo", value, "tail"]


def test_remote_cmd_leaves_plain_words_readable():
    assert remote_cmd("docker", "image", "inspect", "--format", "{{.Id}}", "orch/cpu:1") == (
        "docker image inspect --format '{{.Id}}' orch/cpu:1"
    )
    with pytest.raises(ValueError):
        remote_cmd()


def test_fan_out_runs_in_parallel_and_keeps_every_result():
    barrier = threading.Barrier(3, timeout=5)

    def work(name):
        barrier.wait()  # deadlocks unless all three run at once
        if name == "b":
            raise RemoteError("node b: disk full", host="b")
        if name == "c":
            raise KeyError("oops")
        return name.upper()

    results = fan_out(["a", "b", "c"], work)
    assert list(results) == ["a", "b", "c"]
    assert results["a"].ok and results["a"].value == "A"
    assert not results["b"].ok and isinstance(results["b"].error, RemoteError)
    with pytest.raises(NodeFailures) as info:
        raise_failures(results, "preflight")
    message = str(info.value)
    assert message.startswith("preflight failed on 2 of 3 nodes: ")
    assert "node b: disk full" in message and "node c: KeyError: 'oops'" in message
    assert "\n" not in message
    # Each node keeps its own exception, and the CLI gets one line per node.
    assert info.value.hosts == ["b", "c"]
    assert info.value.errors["b"] is results["b"].error and isinstance(info.value.errors["c"], KeyError)
    assert info.value.lines() == ["preflight: node b: disk full", "preflight: node c: KeyError: 'oops'"]
    assert info.value.exit_code == 2


def test_cli_prints_one_error_line_per_failed_node(capsys):
    from orchestrator.cli import app, main

    @app.command("fail-two-nodes", hidden=True)
    def _fail() -> None:
        raise NodeFailures("teardown", {"a": RemoteError("node a: gone", host="a"), "b": OSError("disk")}, 3)

    try:
        assert main(["fail-two-nodes"]) == 2
    finally:
        app.registered_commands.pop()
    err = capsys.readouterr().err
    assert err.splitlines() == ["orch: error: teardown: node a: gone", "orch: error: teardown: node b: OSError: disk"]


def test_fan_out_stops_waiting_at_once_when_interrupted():
    """Ctrl-C while nodes hang: fan_out raises at once and starts no node that was still waiting."""
    import _thread
    import time

    release = threading.Event()
    started = []

    def hang(name):
        started.append(name)
        release.wait(30)

    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            fan_out(["a", "b", "c"], hang, max_workers=2)
        assert time.monotonic() - t0 < 2
        time.sleep(0.2)
        assert started == ["a", "b"]  # c was never started
    finally:
        release.set()
        timer.cancel()
    time.sleep(0.3)
    assert started == ["a", "b"]


def test_raise_failures_is_quiet_when_all_succeed():
    raise_failures(fan_out(["a"], lambda n: 1), "x")
    assert fan_out([], lambda n: 1) == {}


def test_check_names_node_and_last_stderr_line():
    assert check(Result(0, "x", ""), host="n1", command="true", what="t").stdout == "x"
    with pytest.raises(RemoteError) as info:
        check(Result(125, "", "warn\nError: no space left\n"), host="n1", command="docker run", what="starting")
    assert str(info.value) == "node n1: starting failed (exit 125): Error: no space left"
    assert info.value.returncode == 125 and info.value.command == "docker run"


def test_recording_transport_scripts_and_records(tmp_path):
    t = RecordingTransport(
        responses={"uname -m": Result(0, "x86_64\n", ""), ("n2", "uname -m"): Result(0, "aarch64\n", "")},
        unreachable={"n3"},
    )
    assert t.run("n1", "uname -m").stdout == "x86_64\n"
    assert t.run("n2", "uname -m").stdout == "aarch64\n"
    assert t.run("n1", "other").ok
    with pytest.raises(RemoteError):
        t.run("n3", "true")
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    t.put("n1", src, "/d/f")
    t.get("n1", "/d/f", tmp_path / "g")
    assert (tmp_path / "g").read_bytes() == b"abc"
    assert t.stream_in("n1", "docker load", iter([b"12", b"345"])).ok
    assert t.calls[-1].nbytes == 5
    assert t.commands("n1") == ["uname -m", "other", "docker load"]
