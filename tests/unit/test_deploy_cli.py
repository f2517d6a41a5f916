"""orch deploy / status / teardown: bad input is one line on stderr and exit 2, before any connection."""

from __future__ import annotations

import pytest

from orchestrator.cli import main


@pytest.mark.parametrize("command", ["deploy", "status", "teardown"])
def test_missing_inventory_is_one_line_exit_2(command, tmp_path, capsys):
    assert main([command, "--inventory", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yaml does not exist (--inventory)" in err


def test_password_in_inventory_is_refused_before_connecting(tmp_path, capsys):
    inv = tmp_path / "c.yaml"
    inv.write_text(
        "cluster: c\nhead: a\nssh: {password: x}\nnodes: [{name: a, host: 10.0.0.1, profile: cpu-onnxruntime}]\n"
    )
    assert main(["status", "-i", str(inv)]) == 2
    err = capsys.readouterr().err
    assert "key 'ssh.password'" in err and "ssh-agent" in err and err.count("\n") == 1


def test_help_lists_the_commands_without_heavy_imports():
    import subprocess
    import sys

    code = (
        "import sys; from orchestrator.cli import main; rc = main(['deploy', '--help']);"
        "heavy = [m for m in ('paramiko', 'docker', 'ray', 'onnxruntime') if m in sys.modules];"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "--trust-new-hosts" in out and "--skip-unreachable" in out
    assert "HEAVY []" in out


def _fake_cli(monkeypatch, n=3):
    """A deployed fake cluster behind ``orch deploy/status/teardown``'s transport."""
    from pathlib import Path

    from orchestrator.cli import deploy_cmd
    from orchestrator.deploy import deploy
    from orchestrator.inventory import parse_inventory

    from .deploy_fake import IMAGE, FakeCluster, FakeImages, FakeNode

    nodes = [{"name": f"n{i}", "host": f"10.77.0.{i + 1}", "profile": "cpu-onnxruntime", "cpus": 2} for i in range(1, n + 1)]
    inv = parse_inventory({"cluster": "lab", "head": "n1", "images": {"cpu-onnxruntime": IMAGE.tag}, "nodes": nodes},
                          path=Path("c.yaml"))
    fake = FakeCluster({f"n{i}": FakeNode(ip=f"10.77.0.{i + 1}") for i in range(1, n + 1)}, head="n1")
    deploy(inv, fake.transport, FakeImages(), sleep=lambda s: None)
    monkeypatch.setattr(deploy_cmd, "_open", lambda path, trust, console: (inv, fake.transport))
    return fake


def test_status_of_a_healthy_cluster_exits_0(monkeypatch, capsys):
    _fake_cli(monkeypatch)
    assert main(["status", "-i", "c.yaml"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "alive 10.77.0.4" in out


def test_status_exits_1_with_one_line_per_unreachable_or_unhealthy_node(monkeypatch, capsys):
    import json

    fake = _fake_cli(monkeypatch)
    fake.transport.unreachable.add("n2")
    fake.nodes["n3"].containers["orch-lab-n3"][0] = "exited"
    fake.nodes["n3"].ray = ""
    assert main(["status", "-i", "c.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "orch: error: node n2: unreachable (fake): cannot connect: connection refused",
        "orch: error: node n3: orch's container is exited (run orch deploy)",
    ]
    assert main(["status", "-i", "c.yaml", "--json"]) == 1
    out = capsys.readouterr().out
    rows = json.loads(out)["nodes"]
    assert rows["n1"]["problem"] is None and rows["n2"]["reachable"] is False


def test_teardown_names_every_failing_node_on_its_own_line(monkeypatch, capsys):
    fake = _fake_cli(monkeypatch)
    fake.transport.unreachable.update({"n2", "n3"})
    assert main(["teardown", "-i", "c.yaml"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "orch: error: teardown: node n2 (fake): cannot connect: connection refused",
        "orch: error: teardown: node n3 (fake): cannot connect: connection refused",
    ]
