"""``orch submit``: package run directories as an MLPerf Inference submission."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from orchestrator.cli import app


@app.command("submit")
def submit_command(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directories written by orch bench: one performance run and one accuracy run.", show_default=False
    ),
    submitter: str = typer.Option(..., "--submitter", help="Submitting organisation (a directory name in the tree).", show_default=False),
    system_name: str = typer.Option(..., "--system-name", help="Name of the system (systems/<name>.json).", show_default=False),
    division: str = typer.Option("open", "--division", help="open, or closed (refused until TEST01 compliance runs exist)."),
    out: Path = typer.Option(Path("submission"), "--out", help="Output folder for the tree, tarball and summary."),
    system_meta: Path = typer.Option(
        None, "--system-meta", help="YAML file overriding system-description fields (and a 'measurements' section).", show_default=False
    ),
    allow_invalid: bool = typer.Option(
        False, "--allow-invalid", help="Package test-mode or INVALID runs anyway, marked invalid in the README and summary."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Assemble open/<Submitter>/... (systems, src, results), mlperf_submission.tar.gz and summary.csv/json.

    Runs that loadgen calls INVALID, test-mode runs and runs below the
    official minimums are refused unless --allow-invalid; runs with loadgen
    errors, partial accuracy runs and runs of different systems are always refused.
    """
    from rich.console import Console
    from rich.table import Table

    from orchestrator.submission import assemble

    result = assemble(
        run_dirs,
        out=out,
        submitter=submitter,
        system_name=system_name,
        division=division,
        system_meta=system_meta,
        allow_invalid=allow_invalid,
        force=force,
        command=_command_line(run_dirs, submitter, system_name, division, out, system_meta, allow_invalid, force),
    )
    console = Console(highlight=False, soft_wrap=True)
    first = result.rows[0]
    columns = ("system", "result", "units", "accuracy", "nodes", "valid")
    table = Table(title=f"MLPerf submission: {first['model']} {first['scenario']} ({first['division']}, {first['submitter']})")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in result.rows:
        table.add_row(*(str(row[c]).replace(" F1=", "\nF1=") for c in columns))
    console.print(table)
    if not result.valid:
        console.print("[bold red]NOT A VALID MLPERF RESULT[/] (packaged with --allow-invalid):")
        for reason in result.invalid_reasons:
            console.print(f"  - {reason}")
    console.print(f"tree: {result.submitter_dir}")
    console.print(f"tarball: {result.tarball} (check it unpacked in an empty folder: MLCommons checker, --version v6.1)")
    console.print(f"summary: {result.summary_csv}, {result.summary_json}")
    console.print(f"full accuracy log (keep it, MLCommons may ask): {result.full_accuracy_log}")


def _command_line(run_dirs, submitter, system_name, division, out, system_meta, allow_invalid, force) -> str:
    """The command as parsed (recorded in src/README.md)."""
    words = ["orch", "submit", *map(str, run_dirs), "--submitter", submitter, "--system-name", system_name]
    words += ["--division", division, "--out", str(out)]
    words += ["--system-meta", str(system_meta)] if system_meta else []
    words += ["--allow-invalid"] if allow_invalid else []
    words += ["--force"] if force else []
    return shlex.join(words)
