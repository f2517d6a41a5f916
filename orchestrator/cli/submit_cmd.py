"""``orch submit``: package run directories as an MLPerf Inference submission."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from orchestrator.cli import app


@app.command("submit")
def submit_command(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directories written by orch bench: one performance run and one accuracy run, "
        "or the folder of an orch bench --mode submission.", show_default=False, metavar="RUN_DIR...",
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
    force: bool = typer.Option(False, "--force", help="Replace an earlier orch submission in --out (never a folder orch did not make)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
) -> None:
    """Assemble open/<Submitter>/... (systems, src, results), mlperf_submission.tar.gz and summary.csv/json.

    Runs that loadgen calls INVALID, test-mode runs and runs below the
    official minimums are refused unless --allow-invalid; runs with loadgen
    errors, partial accuracy runs and runs of different systems are always refused.
    """
    from rich.console import Console
    from rich.table import Table

    from orchestrator.submission import assemble
    from orchestrator.submission.system_desc import load_system_meta

    meta = load_system_meta(system_meta.expanduser()) if system_meta else None
    result = assemble(
        run_dirs,
        out=out,
        submitter=submitter,
        system_name=system_name,
        division=division,
        system_meta=meta,
        allow_invalid=allow_invalid,
        force=force,
        command=_command_line(run_dirs, submitter, system_name, division, out, system_meta, allow_invalid, force),
    )
    if as_json:
        import json

        print(json.dumps({
            "tarball": str(result.tarball), "tree": str(result.submitter_dir), "system_json": str(result.system_json),
            "summary_csv": str(result.summary_csv), "summary_json": str(result.summary_json),
            "full_accuracy_log": str(result.full_accuracy_log), "valid": result.valid,
            "invalid_reasons": list(result.invalid_reasons), "results": result.rows,
        }, indent=2))
        return
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
    import sys

    for line in (
        f"tree: {result.submitter_dir}",
        f"tarball: {result.tarball}",
        f"summary: {result.summary_csv}",
        f"summary: {result.summary_json}",
        f"full accuracy log (keep it, MLCommons may ask for it): {result.full_accuracy_log}",
        f"next: check it with the MLCommons checker: python3 -m submission_checker.main --input {result.out} --version v6.1",
    ):
        sys.stdout.write(line + "\n")  # whole paths, never folded by the console


def _command_line(run_dirs, submitter, system_name, division, out, system_meta, allow_invalid, force) -> str:
    """The command as parsed (recorded in src/README.md)."""
    words = ["orch", "submit", *map(str, run_dirs), "--submitter", submitter, "--system-name", system_name]
    words += ["--division", division, "--out", str(out)]
    words += ["--system-meta", str(system_meta)] if system_meta else []
    words += ["--allow-invalid"] if allow_invalid else []
    words += ["--force"] if force else []
    return shlex.join(words)
