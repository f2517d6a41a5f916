"""The ``orch`` command line: parses flags, calls the core, prints.

Every command lives in its own module under ``orchestrator/cli/`` and is
registered in ``_COMMAND_MODULES``. Errors derived from ``OrchError`` become
one line on stderr and exit code 2; ``--debug`` (anywhere on the command
line) adds the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click
import typer

from orchestrator import __version__
from orchestrator.errors import OrchError

app = typer.Typer(
    name="orch",
    help="Run MLPerf Inference BERT-99 across a cluster and get one submission back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# Modules that add commands to ``app`` when imported (each calls
# ``@app.command`` / ``app.add_typer`` at import time).
_COMMAND_MODULES: list[str] = [
    "orchestrator.cli.submit_cmd",
    "orchestrator.cli.bench_cmd",
    "orchestrator.cli.fetch_cmd",
    "orchestrator.cli.images_cmd",
    "orchestrator.cli.sandbox_cmd",
    "orchestrator.cli.deploy_cmd",
    "orchestrator.cli.tune_cmd",
]


class State:
    """Process-wide CLI options (set by ``main`` before a command runs)."""

    debug: bool = False


state = State()


def _version_callback(value: bool) -> None:
    if value:
        print(f"orch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version."),
) -> None:
    """orch: MLPerf Inference BERT-99 (Offline) on one machine or a whole cluster.

    Add --debug anywhere to see tracebacks.
    """


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name)


def error_line(message: str) -> None:
    """Print one error line on stderr, unwrapped (rich would wrap it)."""
    sys.stderr.write(f"orch: error: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``orch`` script. Returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    state.debug = "--debug" in args or os.environ.get("ORCH_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    _load_commands()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="orch", standalone_mode=False)
    except OrchError as exc:
        if state.debug:
            traceback.print_exc()
        error_line(str(exc))
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        error_line("interrupted")
        return 130
    except Exception as exc:  # a bug in orch: say so, traceback behind --debug
        if state.debug:
            traceback.print_exc()
        error_line(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
