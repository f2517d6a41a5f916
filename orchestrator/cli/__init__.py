"""The ``orch`` command line: parses flags, calls the core, prints.

Every command lives in its own module under ``orchestrator/cli/`` and is
registered in ``_COMMAND_MODULES``. Exit codes:

- 0: done;
- 2: bad input: an ``OrchError`` (one line on stderr) or a usage error (the
  framework's own message: one line and the usage hint);
- 130 / 143: stopped by SIGINT (Ctrl-C) / SIGTERM;
- 1: a bug in orch (one line; the traceback with ``--debug``).

``--debug`` works before or after the command name; ``ORCH_DEBUG=1`` too.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from types import ModuleType

import typer

from orchestrator import __version__
from orchestrator.errors import Interrupted, OrchError

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
    "orchestrator.cli.report_cmd",
    "orchestrator.cli.up_cmd",
    "orchestrator.cli.tune_cmd",
]


class State:
    """Process-wide CLI options (set by ``main`` before a command runs).

    Attributes:
        debug: tracebacks and Ray's logs.
        faults: test faults handed to the core (``main(faults=...)``; tests only).
    """

    debug: bool = False
    faults = None  # orchestrator.records.Faults | None


state = State()


def _version_callback(value: bool) -> None:
    if value:
        print(f"orch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and Ray's logs (before or after the command name)."),
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


def _click_modules() -> list[ModuleType]:
    """The click packages whose exceptions typer may raise.

    typer 0.29 vendors click as ``typer._click`` (its exceptions are not the
    ``click`` package's); earlier versions use ``click`` itself. Both are
    handled, so every typer that pyproject admits gives the same exit codes.
    """
    found = []
    for name in ("typer._click", "click"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


def _exceptions(attr: str) -> tuple[type[BaseException], ...]:
    """``attr`` (Exit, Abort, ClickException, UsageError) of every click, and typer's own where it has one."""
    found = [getattr(m.exceptions, attr) for m in _click_modules() if hasattr(m.exceptions, attr)]
    try:  # typer 0.29 raises its own Exit/Abort (typer.exceptions), e.g. Exit(130) for Ctrl-C
        own = importlib.import_module("typer.exceptions")
        if isinstance(getattr(own, attr, None), type):
            found.append(getattr(own, attr))
    except ImportError:
        pass
    return tuple(dict.fromkeys(found))


def _strip_debug(args: list[str]) -> tuple[list[str], bool]:
    """Remove ``--debug`` wherever it stands before ``--``; say whether it was there."""
    out, debug, literal = [], False, False
    for arg in args:
        if arg == "--":
            literal = True
        if arg == "--debug" and not literal:
            debug = True
            continue
        out.append(arg)
    return out, debug


def _raise_terminated(signum: int, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise Interrupted("stopped by SIGTERM", signal_name="SIGTERM")


def main(argv: list[str] | None = None, *, faults=None, handle_signals: bool | None = None) -> int:
    """Entry point of the ``orch`` script. Returns the process exit code.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
        faults: test faults (``orchestrator.records.Faults``) passed to the core;
            tests inject them here, production code never reads them elsewhere.
        handle_signals: turn SIGTERM into an orderly stop (default: when
            ``argv`` is None, i.e. in the real ``orch`` process).
    """
    args, debug = _strip_debug(list(sys.argv[1:] if argv is None else argv))
    state.debug = debug or os.environ.get("ORCH_DEBUG") == "1"
    state.faults = faults
    _load_commands()
    command = typer.main.get_command(app)
    previous = None
    if handle_signals if handle_signals is not None else argv is None:
        # SIGTERM stops orch like Ctrl-C does, with its own exit code.
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    exit_types, usage_types, abort_types = _exceptions("Exit"), _exceptions("ClickException"), _exceptions("Abort")
    try:
        result = command.main(args=args, prog_name="orch", standalone_mode=False)
    except Interrupted as exc:
        if state.debug:
            traceback.print_exc()
        error_line(str(exc))
        return exc.exit_code
    except OrchError as exc:
        if state.debug:
            traceback.print_exc()
        for line in exc.lines():
            error_line(line)
        return exc.exit_code
    except exit_types as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            # typer turns Ctrl-C into a silent Exit(130): say what happened.
            if state.debug:
                traceback.print_exception(exc.__cause__)
            error_line("interrupted (Ctrl-C)")
            return 130
        return exc.exit_code
    except usage_types as exc:
        exc.show()
        if getattr(exc, "ctx", None) is None and isinstance(exc, _exceptions("UsageError")):
            # Raised before a command context existed: click shows no usage hint then.
            words = [a for a in args if not a.startswith("-")][:1]
            sys.stderr.write(f"Try 'orch {' '.join(words + ['--help'])}' for help.\n")
        return exc.exit_code if isinstance(getattr(exc, "exit_code", None), int) and exc.exit_code else 2
    except abort_types + (KeyboardInterrupt,):
        if state.debug:
            traceback.print_exc()
        error_line("interrupted (Ctrl-C)")
        return 130
    except Exception as exc:  # a bug in orch: say so, traceback behind --debug
        if state.debug:
            traceback.print_exc()
        error_line(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback)")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if result == 130:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns
        # that code without a word (orch's commands return nothing themselves).
        error_line("interrupted (Ctrl-C)")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
