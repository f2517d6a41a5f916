"""Usage errors: the framework's own message, exit 2, for every kind and every command; --debug anywhere.

Whatever typer pyproject admits (0.29 vendors click as ``typer._click`` and
raises its own ``Exit``; older ones use ``click`` itself), these hold. CI runs
this file again with the lowest typer allowed.
"""

from __future__ import annotations

import pytest

from orchestrator.cli import _strip_debug, main

KINDS = [
    ("mistyped flag", ["bench", "--nodez", "2"], "--nodez"),
    ("not an integer", ["bench", "--nodes", "two"], "'--nodes'"),
    ("not a number", ["bench", "--target-qps", "fast"], "'--target-qps'"),
    ("flag without its value", ["bench", "--nodes"], "requires an argument"),
    ("unknown command", ["bnech"], "No such command 'bnech'"),
    ("unknown subcommand", ["images", "frobnicate"], "No such command 'frobnicate'"),
    ("missing argument", ["submit"], "Missing argument"),
    ("missing required option", ["deploy"], "Missing option '--inventory'"),
    ("extra argument", ["bench", "extra"], "unexpected extra argument"),
    ("mistyped flag of a subcommand", ["sandbox", "up", "--nodez", "3"], "--nodez"),
    ("mistyped flag of status", ["status", "--inventry", "x"], "--inventry"),
    ("mistyped flag of fetch", ["fetch", "--frm", "x"], "--frm"),
]


@pytest.mark.parametrize("kind, argv, needle", KINDS, ids=[k[0] for k in KINDS])
def test_usage_errors_exit_2_with_the_frameworks_message(kind, argv, needle, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert needle in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert "Usage: orch" in err or "--help' for help." in err  # the usage hint
    assert [line for line in err.splitlines() if line.startswith("Error:")] == [
        next(line for line in err.splitlines() if line.startswith("Error:"))]


def test_plain_orch_shows_usage_and_exits_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "Usage: orch" in captured.err + captured.out


def test_help_and_version_exit_0(capsys):
    assert main(["--help"]) == 0
    assert main(["bench", "--help"]) == 0
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().endswith(__import__("orchestrator").__version__)


@pytest.mark.parametrize("argv", [["--debug", "bench"], ["bench", "--debug"], ["bench", "--nodes", "2", "--debug"]])
def test_debug_is_taken_before_or_after_the_command(argv):
    args, debug = _strip_debug(argv)
    assert debug and "--debug" not in args


def test_debug_after_a_literal_double_dash_is_an_argument():
    args, debug = _strip_debug(["submit", "--", "--debug"])
    assert not debug and args == ["submit", "--", "--debug"]


def test_an_orch_error_is_one_line_and_exit_2(capsys):
    assert main(["bench", "--nodes", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "orch: error: --nodes must be at least 1 (got 0)\n"


def test_ctrl_c_inside_a_command_is_exit_130_with_one_line(monkeypatch, capsys):
    import orchestrator.cli.fetch_cmd as fetch_cmd

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch_cmd, "fetch", interrupted)
    assert main(["fetch", "vocab"]) == 130
    assert capsys.readouterr().err == "orch: error: interrupted (Ctrl-C)\n"


def test_sigterm_is_exit_143(monkeypatch, capsys):
    import orchestrator.cli.fetch_cmd as fetch_cmd
    from orchestrator.errors import Interrupted

    def terminated(*args, **kwargs):
        raise Interrupted("stopped by SIGTERM", signal_name="SIGTERM")

    monkeypatch.setattr(fetch_cmd, "fetch", terminated)
    assert main(["fetch", "vocab"]) == 143
    assert capsys.readouterr().err == "orch: error: stopped by SIGTERM\n"
