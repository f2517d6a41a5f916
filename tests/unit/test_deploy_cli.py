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
