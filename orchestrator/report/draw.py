"""From read runs to drawn figures: which figures a run gets, their captions and file names."""

from __future__ import annotations

from typing import Any, Sequence

from orchestrator.report import analysis, figures
from orchestrator.report.html import DrawnFigure, verdict
from orchestrator.report.runs import RunData


def _draw(fig, key: str, title: str, caption: str, png_folder: str) -> tuple[DrawnFigure, dict[str, bytes]]:
    svg, png = figures.render(fig, salt=key)
    name = f"{key}.png"
    return DrawnFigure(key, title, svg, f"{png_folder}/{name}", caption), {name: png}


def draw_run(run: RunData, *, prefix: str, png_folder: str) -> tuple[list[DrawnFigure], list[str], dict[str, bytes]]:
    """The figures of one run, notes on what could not be drawn, and the PNGs by file name.

    Args:
        prefix: starts every gid and file name of this run (``r0-``), so the
            runs of one page never share an id.
        png_folder: the PNGs' folder, relative to the page.
    """
    timeline = run.timeline
    notes: list[str] = []
    if timeline is None:
        return [], [f"No figures: {run.timeline_problem}."], {}
    if timeline.truncated:
        notes.append("The timeline's last line was cut short (the run was killed while writing it) and was skipped.")
    if timeline.ended is None:
        notes.append("The timeline has no end record: the driver stopped before the run finished.")
    if not timeline.chunks and not timeline.losses:
        return [], notes + ["No figures: no chunk was answered before the run stopped."], {}
    an = analysis.analyse(timeline)
    shifted = {w: off for w, off in an.offsets.items() if abs(off) >= 0.001}
    if shifted:
        notes.append("Worker clocks were shifted onto the driver's: "
                     + ", ".join(f"{w} {off * 1000:+.0f} ms" for w, off in shifted.items()) + ".")
    lost = ", ".join(f"{lane.worker} at {lane.lost_at:.1f} s" for lane in an.lanes if lane.lost_at is not None)
    if not timeline.chunks:  # workers were lost before any answer: their lanes still say when
        notes.append("Only the timeline: no chunk was answered before the run stopped.")
    specs = [
        ("gantt", "Timeline", figures.gantt(an, prefix),
         f"One lane per worker, one bar per chunk from the start to the end of its compute "
         f"({an.chunks} chunks, {an.samples} samples). Red hatched bars are chunks re-run after a lost worker"
         + (f"; lost: {lost}, its chunks in flight hatched" if lost else "") + "."),
    ]
    if timeline.chunks:
        tp = analysis.throughput(timeline, an)
        points = analysis.length_points(timeline, an)
        specs += [
            ("throughput", "Throughput", figures.throughput(an, tp, prefix),
             "Samples per second in time bins, each chunk's samples spread over its compute span, for all workers "
             "and per node; dotted: answers as they reached loadgen. Dashed lines: loadgen's start and end."),
            ("balance", "Balance", figures.balance(an, prefix),
             "Left: each node's share of the samples it did, against its share of the measured capacity (samples per "
             "busy second) and of the CPUs. Right: how long each worker sat idle before the last answer."),
            ("lengths", "Sequence lengths", figures.lengths(an, points, prefix),
             "Left: real tokens per sample of each chunk (dot: mean, bar: min to max) when it ran: longest first, as "
             "the dispatcher sorts them. Right: samples per node by length."),
        ]
    drawn, files = [], {}
    for name, title, fig, caption in specs:
        one, png = _draw(fig, f"{prefix}{name}", title, caption, png_folder)
        drawn.append(one)
        files.update(png)
    return drawn, notes, files


def comparison_rows(runs: Sequence[RunData]) -> list[dict[str, Any]]:
    """One row per run for the comparison table, efficiency included."""
    figs = []
    for run in runs:
        sps = run.get("samples_per_second")
        if sps is None and run.loadgen is not None:
            sps = run.loadgen.samples_per_second
        nodes = run.get("nodes") or (len({w.node for w in run.timeline.workers}) if run.timeline else 0)
        backend = run.get("backend") or (run.timeline.workers[0].backend if run.timeline and run.timeline.workers else "-")
        if backend == "auto":
            backend = "+".join(run.get("backends") or ["auto"])
        figs.append(analysis.RunFigures(run.label, run.get("mode") or "-", int(nodes or 0), str(backend),
                                        str(run.get("model") or "-"), sps))
    eff = analysis.scaling_efficiency(figs)
    rows = []
    for run, fig, e in zip(runs, figs, eff):
        workers = len(run.timeline.workers) if run.timeline else sum(len(n.get("workers") or []) for n in run.get("per_node") or [])
        rows.append({"label": fig.label, "mode": fig.mode, "execution": run.get("execution") or "-", "nodes": fig.nodes,
                     "workers": workers, "backend": fig.backend, "model": fig.model,
                     "samples_per_second": fig.samples_per_second, "efficiency": e, "verdict": verdict(run)[0],
                     "figures": fig})
    return rows


def draw_comparison(runs: Sequence[RunData], *, png_folder: str) -> tuple[list[dict[str, Any]], DrawnFigure | None, dict[str, bytes]]:
    """The comparison table's rows and, when two runs or more have samples/s, its figure."""
    rows = comparison_rows(runs)
    measured = [r["figures"] for r in rows if r["samples_per_second"]]
    if len(measured) < 2:
        return rows, None, {}
    fig, files = _draw(figures.comparison(measured, "cmp-"), "compare", "Runs compared",
                       "Samples per second of each run (bars) and its scaling efficiency (line).", png_folder)
    return rows, fig, files
