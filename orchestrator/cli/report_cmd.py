"""``orch report``: one self-contained HTML page (and PNGs) of what happened in one or more runs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from orchestrator.cli import app


@app.command("report")
def report_command(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directories written by orch bench (a --mode submission one counts as its two runs).", show_default=False
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="The HTML file to write (default: RUN_DIR/report.html for one run, ./orch-report.html for several)."
    ),
) -> None:
    """Write an HTML report (Gantt timeline, throughput, balance, sequence lengths, results; a comparison of several runs)."""
    from orchestrator.report import REPORT_FILE, make_report

    if out is None:
        out = run_dirs[0] / REPORT_FILE if len(run_dirs) == 1 else Path("orch-report.html")
    report = make_report(run_dirs, out)
    print(f"report: {report.html}")
    if report.figures:
        print(f"figures: {report.figures[0].parent}/ ({len(report.figures)} PNG)")


def report_after_bench(summary: dict, *, command: str | None = None) -> str | None:
    """Write ``report.html`` into the run directory `orch bench` just made; returns its path.

    A report that cannot be made never fails the run: one line on stderr
    says why, and None is returned.
    """
    run_dir = Path(summary.get("out") or summary["run_dir"])
    try:
        from orchestrator.report import REPORT_FILE, make_report

        return str(make_report([run_dir], run_dir / REPORT_FILE, command=command).html)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the run itself stands
        from orchestrator.cli import state

        if state.debug:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"orch: the run is complete, but its report was not written: {exc}\n")
        return None
