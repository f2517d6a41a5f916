"""The report's figures, drawn with matplotlib (imported here only: ``orch report`` and the
report written after ``orch bench``; no controller command imports this module).

matplotlib, because it writes PNG and SVG itself (the PNGs for posters and
papers, the SVG inline in the HTML, so the report needs no JavaScript and
prints to PDF as vectors), runs headless with no display and no browser, and
is the most widely kept plotting library in Python.

Every plotted element that a test or a reader may want to find carries a
``gid``, which becomes the ``id`` of its group in the SVG:
``<prefix>gantt-lane-<worker>`` holds one path per chunk computed by that
worker, ``<prefix>gantt-rerun-<worker>`` its re-run chunks, and so on (see
each builder). Builders use ``matplotlib.figure.Figure`` directly, never
pyplot: no global state, safe in any thread.
"""

from __future__ import annotations

import io
import re
from typing import Sequence

from orchestrator.report.analysis import Analysis, LengthPoint, RunFigures, Throughput, scaling_efficiency

# Above this many chunks the Gantt bars are drawn as one image inside the SVG
# (a 190-million-sample run has tens of thousands of chunks: vector bars
# would make a page of tens of megabytes).
VECTOR_BARS_MAX = 4000

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
RERUN_COLOR = "#d62728"
LOST_COLOR = "#d62728"
LOADGEN_COLOR = "#444444"


def gid(prefix: str, *parts: str) -> str:
    """An SVG id from a prefix and names (anything but letters, digits, ``-_.`` becomes ``_``)."""
    return prefix + "-".join(re.sub(r"[^A-Za-z0-9_.-]", "_", p) for p in parts)


def node_colors(nodes: Sequence[str]) -> dict[str, str]:
    """One color per node, the same in every figure of a run."""
    return {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(nodes)}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _loadgen_marks(ax, an: Analysis, prefix: str) -> None:
    for name, t in (("start", an.loadgen_start), ("end", an.loadgen_end)):
        if t is not None:
            ax.axvline(t, color=LOADGEN_COLOR, linestyle="--", linewidth=1, gid=gid(prefix, "loadgen", name),
                       label="loadgen start / end" if name == "start" else None)


def gantt(an: Analysis, prefix: str = ""):
    """One lane per worker (grouped by node), one bar per chunk computed; re-runs and losses marked.

    gids: ``gantt-lane-<w>`` (the chunks run once), ``gantt-rerun-<w>`` (chunks
    run again after a lost worker), ``gantt-lostwork-<w>`` (chunks that died
    with a lost worker), ``gantt-lost-<w>`` (the moment it was lost).
    """
    lanes = an.lanes
    fig = _figure(9.0, 1.3 + 0.42 * max(1, len(lanes)))
    ax = fig.add_subplot()
    colors = node_colors(an.nodes)
    raster = an.chunks > VECTOR_BARS_MAX
    for row, lane in enumerate(lanes):
        y = len(lanes) - 1 - row
        first = [(b.start, max(b.end - b.start, 1e-6)) for b in lane.bars if not b.rerun]
        again = [(b.start, max(b.end - b.start, 1e-6)) for b in lane.bars if b.rerun]
        ax.broken_barh(first, (y - 0.38, 0.76), facecolors=colors[lane.node], edgecolor="white", linewidth=0.3,
                       gid=gid(prefix, "gantt-lane", lane.worker), rasterized=raster)
        if again:
            ax.broken_barh(again, (y - 0.38, 0.76), facecolors=RERUN_COLOR, edgecolor="white", linewidth=0.3,
                           hatch="///", gid=gid(prefix, "gantt-rerun", lane.worker), rasterized=raster)
        if lane.lost_work:
            ax.broken_barh([(a, max(b - a, 1e-6)) for a, b in lane.lost_work], (y - 0.38, 0.76), facecolors="none",
                           edgecolor=LOST_COLOR, hatch="xx", linewidth=0.8, gid=gid(prefix, "gantt-lostwork", lane.worker))
        if lane.lost_at is not None:
            ax.plot([lane.lost_at], [y], marker="X", markersize=11, color=LOST_COLOR, linestyle="none",
                    gid=gid(prefix, "gantt-lost", lane.worker))
            ax.annotate("lost", (lane.lost_at, y), xytext=(6, 6), textcoords="offset points", color=LOST_COLOR, fontsize=8)
    _loadgen_marks(ax, an, prefix)
    ax.set_yticks(range(len(lanes)), [f"{lane.node} / {lane.worker}" if lane.node != lane.worker else lane.worker
                                      for lane in reversed(lanes)])
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_xlabel("seconds since loadgen's start (driver clock)")
    ax.set_title(f"Chunks per worker: {an.chunks} chunks, {an.reruns} re-run" + (", bars rasterized" if raster else ""))
    ax.grid(axis="x", alpha=0.3)
    _legend_gantt(ax, an, colors)
    return fig


def _legend_gantt(ax, an: Analysis, colors: dict[str, str]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colors[n], label=n) for n in an.nodes]
    if an.reruns:
        handles.append(Patch(facecolor=RERUN_COLOR, hatch="///", label="re-run"))
    if any(lane.lost_at is not None for lane in an.lanes):
        handles.append(Line2D([], [], marker="X", color=LOST_COLOR, linestyle="none", label="worker lost"))
    if an.loadgen_start is not None:
        handles.append(Line2D([], [], color=LOADGEN_COLOR, linestyle="--", label="loadgen start / end"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def throughput(an: Analysis, tp: Throughput, prefix: str = ""):
    """Samples/s over time: all workers, each node, and answers back at the driver.

    gids: ``throughput-overall``, ``throughput-node-<node>``, ``throughput-answered``,
    ``loadgen-start``, ``loadgen-end``.
    """
    fig = _figure(9.0, 3.6)
    ax = fig.add_subplot()
    colors = node_colors(an.nodes)
    if tp.overall.size:
        ax.stairs(tp.overall, tp.edges, color="black", linewidth=2, label="all workers (computed)",
                  gid=gid(prefix, "throughput-overall"))
        if len(an.nodes) > 1:
            for node in an.nodes:
                ax.stairs(tp.per_node[node], tp.edges, color=colors[node], linewidth=1.3, label=node,
                          gid=gid(prefix, "throughput-node", node))
    _loadgen_marks(ax, an, prefix)
    ax.set_xlabel("seconds since loadgen's start (driver clock)")
    ax.set_ylabel("samples / s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput over time")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if tp.answered.size:
        # Answers reach loadgen a chunk at a time: as a rate that is spikes, so it is drawn cumulated.
        done = ax.twinx()
        total = float(tp.answered.sum()) or 1.0
        line = done.step(tp.edges, [0.0, *(tp.answered.cumsum() / total * 100)], where="post", color="#888888",
                         linewidth=1, linestyle=":", gid=gid(prefix, "throughput-answered"))[0]
        done.set_ylim(0, 105)
        done.set_ylabel("answered to loadgen, % of the query", color="#666666")
        handles.append(line)
        labels.append("answered to loadgen (right)")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.1, 1.0), fontsize=8, frameon=False)
    return fig


def balance(an: Analysis, prefix: str = ""):
    """Left: each node's share of samples, of measured capacity, of CPUs. Right: idle time at the end per worker.

    gids: ``share-samples-<node>``, ``share-capacity-<node>``, ``share-cpus-<node>``, ``idle-<worker>``.
    """
    fig = _figure(9.0, 1.8 + 0.35 * max(len(an.shares), len(an.lanes)))
    left, right = fig.subplots(1, 2, width_ratios=[1.3, 1.0])
    shares = an.shares
    ys = list(range(len(shares)))[::-1]
    h = 0.26
    for y, s in zip(ys, shares):
        left.barh(y + h, s.sample_share * 100, height=h, color="#1f77b4", gid=gid(prefix, "share-samples", s.node))
        left.barh(y, s.capacity_share * 100, height=h, color="#ff7f0e", gid=gid(prefix, "share-capacity", s.node))
        if s.cpu_share is not None:
            left.barh(y - h, s.cpu_share * 100, height=h, color="#bbbbbb", gid=gid(prefix, "share-cpus", s.node))
    left.set_yticks(ys, [s.node for s in shares])
    left.set_xlabel("% of the run")
    left.set_title("Share of samples vs share of capacity")
    from matplotlib.patches import Patch

    left.legend(handles=[Patch(color="#1f77b4", label="samples done"), Patch(color="#ff7f0e", label="capacity (samples per busy s)"),
                         Patch(color="#bbbbbb", label="CPUs / GPUs")], fontsize=7, loc="upper center",
                bbox_to_anchor=(0.5, -0.2), ncols=3, frameon=False)
    left.grid(axis="x", alpha=0.3)
    colors = node_colors(an.nodes)
    lanes = an.lanes
    for row, lane in enumerate(lanes):
        y = len(lanes) - 1 - row
        idle = an.idle_at_end.get(lane.worker)
        if idle is None:
            right.text(0.02, y, "lost", va="center", color=LOST_COLOR, fontsize=9, gid=gid(prefix, "idle", lane.worker),
                       transform=right.get_yaxis_transform())
        else:
            right.barh(y, idle, color=colors[lane.node], height=0.6, gid=gid(prefix, "idle", lane.worker))
    right.set_yticks(range(len(lanes)), [lane.worker for lane in reversed(lanes)])
    right.set_ylim(-0.6, len(lanes) - 0.4)
    right.set_xlim(left=0)
    right.set_xlabel("seconds idle before the last answer")
    right.set_title("Idle at the end")
    right.grid(axis="x", alpha=0.3)
    return fig


def lengths(an: Analysis, points: Sequence[LengthPoint], prefix: str = ""):
    """Left: each chunk's sequence lengths (mean, min-max) over the run. Right: per node, samples by length.

    gids: ``lengths-node-<node>`` (the chunks' points), ``lengths-hist-<node>``.
    """
    fig = _figure(9.0, 3.6)
    left, right = fig.subplots(1, 2, width_ratios=[1.6, 1.0])
    colors = node_colors(an.nodes)
    import numpy as np

    for node in an.nodes:
        mine = [p for p in points if p.node == node]
        if not mine:
            continue
        t = np.array([p.t for p in mine])
        mean = np.array([p.mean for p in mine])
        err = np.array([[p.mean - p.low for p in mine], [p.high - p.mean for p in mine]])
        points_drawn = left.errorbar(t, mean, yerr=err, fmt="o", markersize=3, elinewidth=0.6, color=colors[node],
                                     label=node, gid=gid(prefix, "lengths-node", node))
        if len(points) > VECTOR_BARS_MAX:  # as for the Gantt bars: one image, not tens of thousands of paths
            for artist in points_drawn.lines[:1] + tuple(points_drawn.lines[2]):
                artist.set_rasterized(True)
        right.hist(mean, bins=20, weights=[p.samples for p in mine], histtype="step", linewidth=1.5,
                   color=colors[node], label=node, gid=gid(prefix, "lengths-hist", node))
    left.set_xlabel("seconds since loadgen's start")
    left.set_ylabel("real tokens per sample")
    left.set_title("Sequence lengths over the run (chunk mean, min-max)")
    left.grid(alpha=0.3)
    right.set_xlabel("real tokens per sample (chunk mean)")
    right.set_ylabel("samples")
    right.set_title("Per node")
    right.grid(alpha=0.3)
    if len(an.nodes) > 1:
        right.legend(fontsize=7)
    return fig


def comparison(rows: Sequence[RunFigures], prefix: str = ""):
    """Several runs side by side: samples/s (bars) and scaling efficiency (line, right axis).

    gids: ``compare-sps-<i>`` per run, ``compare-efficiency``.
    """
    eff = scaling_efficiency(rows)
    fig = _figure(9.0, 3.8)
    ax = fig.add_subplot()
    xs = list(range(len(rows)))
    for i, row in enumerate(rows):
        ax.bar(i, row.samples_per_second or 0.0, color=_PALETTE[i % len(_PALETTE)], gid=gid(prefix, "compare-sps", str(i)))
        if row.samples_per_second:
            ax.annotate(f"{row.samples_per_second:.1f}", (i, row.samples_per_second), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [f"{r.label}\n{r.nodes} node{'s' if r.nodes != 1 else ''}, {r.backend}" for r in rows], fontsize=8)
    ax.set_ylabel("samples / s")
    ax.set_title("Runs compared")
    ax.grid(axis="y", alpha=0.3)
    if any(e is not None for e in eff):
        other = ax.twinx()
        other.plot([x for x, e in zip(xs, eff) if e is not None], [e * 100 for e in eff if e is not None], "o-",
                   color="black", gid=gid(prefix, "compare-efficiency"))
        other.set_ylabel("scaling efficiency, % (per node vs the fewest-node run)")
        other.set_ylim(0, max(110, max(e * 100 for e in eff if e is not None) + 10))
    return fig


def render(fig, *, salt: str) -> tuple[str, bytes]:
    """The figure as inline SVG markup (no XML prolog, no metadata) and as PNG bytes.

    Args:
        salt: makes the SVG's generated ids (clip paths, markers) unique to
            this figure and the same from one report to the next.
    """
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=130, metadata={"Software": None})
    return svg, png.getvalue()
