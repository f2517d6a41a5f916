"""``orch up`` / ``orch down``: a local Ray kept up between `orch bench` runs (faster start-up)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from orchestrator.cli import app


@app.command("up")
def up_cmd(
    cpus: Optional[int] = typer.Option(None, "--cpus", help="Logical CPUs of the local Ray (default: this machine's); as many idle workers start ahead."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Start a local Ray that `orch bench` joins (and keeps its workers loaded in) until `orch down`."""
    from orchestrator.bench.local_ray import up
    from orchestrator.errors import InputError

    if cpus is not None and cpus < 1:
        raise InputError(f"--cpus must be at least 1 (got {cpus})")
    state, started = up(cpus)
    if as_json:
        print(json.dumps({**state.as_dict(), "started": started}, indent=2))
        return
    verb = "up" if started else "already up"
    print(f"local Ray {verb}: pid {state.pid}, {state.address}, {state.cpus} CPUs; "
          "a local orch bench joins it and keeps its workers loaded; orch down stops it")


@app.command("down")
def down_cmd(as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout.")) -> None:
    """Stop the local Ray of `orch up` and every worker kept in it (nothing to do when none runs)."""
    from orchestrator.bench.local_ray import down

    state = down()
    if as_json:
        print(json.dumps({"stopped": state.as_dict() if state else None}, indent=2))
        return
    print(f"local Ray stopped (pid {state.pid})" if state else "no local Ray of orch up is running")
