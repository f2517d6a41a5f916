"""`orch report`: what happened in one or more runs, as one self-contained HTML file and PNGs.

``make_report`` reads run directories (``runs``), computes what to plot
(``analysis``, no plotting library), draws it with matplotlib (``figures``)
and writes the page (``html``) and one PNG per figure beside it, in
``<stem>-figures/``. Every file is written atomically, the page last.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from orchestrator.errors import OrchError
from orchestrator.fileio import atomic_write
from orchestrator.report.runs import RunData, load_runs

REPORT_FILE = "report.html"


class ReportError(OrchError):
    """A report could not be made."""


@dataclasses.dataclass(frozen=True)
class Report:
    """What ``make_report`` wrote."""

    html: Path
    figures: list[Path]
    runs: list[RunData]


def figures_dir(html: Path) -> Path:
    """Where the PNGs of the report ``html`` go: ``<stem>-figures/`` beside it."""
    return html.with_name(f"{html.stem}-figures")


def make_report(run_dirs: Sequence[Path], out: Path, *, command: str | None = None, title: str | None = None) -> Report:
    """Write the report of ``run_dirs`` to ``out`` (HTML) and its figures as PNGs beside it.

    Args:
        run_dirs: run directories of `orch bench` (a submission-mode one counts as its two runs).
        out: the HTML file to write.
        command: the command that made the run(s), when it differs from the
            one in run.json (``orch bench --inventory`` on the controller).
        title: the page's title.

    Raises:
        InputError: a run directory is unusable.
        ReportError: matplotlib is missing.
    """
    runs = [run for path in run_dirs for run in load_runs(Path(path))]
    _require_matplotlib()
    from orchestrator.report import html
    from orchestrator.report.draw import draw_comparison, draw_run

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = figures_dir(out)
    pngs: dict[str, bytes] = {}
    sections = []
    for index, run in enumerate(runs):
        drawn, notes, files = draw_run(run, prefix=f"r{index}-", png_folder=folder.name)
        pngs.update(files)
        sections.append(html.RunSection(index, run, drawn, notes))
    comparison = None
    if len(runs) > 1:
        rows, figure, files = draw_comparison(runs, png_folder=folder.name)
        pngs.update(files)
        comparison = (rows, figure)
    if title is None:
        title = f"orch report: {runs[0].label}" if len(runs) == 1 else f"orch report: {len(runs)} runs"
    text = html.page(sections, comparison=comparison, command=command, title=title)
    for old in folder.glob("*.png"):
        old.unlink()  # an earlier report's figures: no stale PNG stays beside the new page
    written = []
    if pngs:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in pngs.items():
            written.append(atomic_write(folder / name, data))
    atomic_write(out, text)
    return Report(out, written, runs)


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ReportError("orch report needs matplotlib, which is not installed", hint="pip install 'matplotlib>=3.8' (a dependency of orch: reinstall orch to get it)") from exc
