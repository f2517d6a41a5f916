"""What the figures plot, computed from a timeline: plain numbers, no plotting library.

Times are seconds on the driver's clock, counted from loadgen's start (the
moment StartTest was called; the header's ``t0`` when that mark is absent).
Worker times (when a chunk's compute started and ended) come from each
worker's own clock; ``clock_offsets`` estimates, per worker, the shift that
puts them on the driver's clock, from the fact that a chunk is computed after
it was handed out and before its answer came back.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from orchestrator.bench.timeline import ChunkDone, Timeline


@dataclasses.dataclass(frozen=True)
class Bar:
    """One chunk on a worker's lane (driver clock, seconds since loadgen's start)."""

    chunk: int
    start: float
    end: float
    samples: int
    rerun: bool


@dataclasses.dataclass(frozen=True)
class Lane:
    """One worker's row of the Gantt chart."""

    worker: str
    node: str
    bars: list[Bar]
    lost_at: float | None  # when the driver saw the worker lost
    lost_work: list[tuple[float, float]]  # in-flight chunks that died with it (from, to)


@dataclasses.dataclass(frozen=True)
class NodeShare:
    """One node's part of the work against its part of the capacity."""

    node: str
    samples: int
    busy: float  # compute seconds, all its workers
    rate: float  # samples per busy second: its measured capacity
    sample_share: float
    capacity_share: float
    cpu_share: float | None  # its share of the run's CPUs (GPUs for GPU workers)


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Everything the run's figures draw."""

    origin: float  # seconds since t0 that the plots call 0
    lanes: list[Lane]
    nodes: list[str]
    offsets: dict[str, float]
    loadgen_start: float | None
    loadgen_end: float | None
    dispatch_end: float | None  # the last answer back at the driver
    shares: list[NodeShare]
    idle_at_end: dict[str, float | None]  # worker -> seconds idle before the last answer; None: lost
    samples: int
    chunks: int
    reruns: int


def clock_offsets(timeline: Timeline) -> dict[str, float]:
    """Per worker, the seconds to add to its clock's times to put them on the driver's.

    Each answered chunk bounds the offset: ``submitted - start <= offset <= back - end``.
    The smallest correction inside every bound is kept (0 when the clocks
    already agree, as on one machine); bounds that contradict each other
    (jitter in the last microseconds) give their midpoint.
    """
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for c in timeline.chunks:
        if c.start is None or c.end is None or c.submitted is None:
            continue
        low[c.worker] = max(low.get(c.worker, -np.inf), c.submitted - c.start)
        high[c.worker] = min(high.get(c.worker, np.inf), c.back - c.end)
    offsets = {}
    for worker in low:
        lo, hi = low[worker], high[worker]
        offsets[worker] = (lo + hi) / 2 if lo > hi else float(min(max(0.0, lo), hi))
    return offsets


def analyse(timeline: Timeline) -> Analysis:
    """The numbers behind every figure of one run."""
    origin = timeline.loadgen_start if timeline.loadgen_start is not None else 0.0
    offsets = clock_offsets(timeline)
    workers = [w.name for w in timeline.workers]
    for c in timeline.chunks:
        if c.worker not in workers:
            workers.append(c.worker)
    by_worker: dict[str, list[Bar]] = {w: [] for w in workers}
    for c in timeline.chunks:
        start, end = _compute_span(c, offsets.get(c.worker, 0.0))
        by_worker[c.worker].append(Bar(c.chunk, start - origin, end - origin, c.samples, c.rerun))
    losses = {loss.worker: loss for loss in timeline.losses}
    lanes = []
    for worker in workers:
        bars = sorted(by_worker[worker], key=lambda b: b.start)
        loss = losses.get(worker)
        lost_work: list[tuple[float, float]] = []
        if loss is not None:
            # The chunks it held died with it: from its last answer (or their hand-out) to the loss.
            last_end = bars[-1].end if bars else None
            for h in timeline.handouts:
                if h.worker == worker and h.chunk in loss.requeued and h.t <= loss.t:
                    begin = h.t - origin if last_end is None else max(h.t - origin, last_end)
                    lost_work.append((begin, loss.t - origin))
        lanes.append(Lane(worker, timeline.node_of(worker), bars, None if loss is None else loss.t - origin, lost_work))
    dispatch_end = max((c.back for c in timeline.chunks), default=None)
    idle = {}
    for lane in lanes:
        if lane.lost_at is not None or dispatch_end is None:
            idle[lane.worker] = None
        else:
            last = max((b.end for b in lane.bars), default=None)
            idle[lane.worker] = (dispatch_end - origin) - last if last is not None else dispatch_end - origin
    nodes = list(dict.fromkeys(lane.node for lane in lanes))
    return Analysis(
        origin=origin,
        lanes=lanes,
        nodes=nodes,
        offsets=offsets,
        loadgen_start=_rel(timeline.loadgen_start, origin),
        loadgen_end=_rel(timeline.loadgen_end, origin),
        dispatch_end=_rel(dispatch_end, origin),
        shares=node_shares(timeline),
        idle_at_end=idle,
        samples=sum(c.samples for c in timeline.chunks),
        chunks=len(timeline.chunks),
        reruns=sum(1 for c in timeline.chunks if c.rerun),
    )


def _compute_span(c: ChunkDone, offset: float) -> tuple[float, float]:
    if c.start is not None and c.end is not None:
        return c.start + offset, c.end + offset
    # No worker clock: the compute ended at the latest when the answer came back.
    return c.back - c.busy, c.back


def _rel(t: float | None, origin: float) -> float | None:
    return None if t is None else t - origin


def node_shares(timeline: Timeline) -> list[NodeShare]:
    """Each node's share of the samples, of the measured capacity, and of the CPUs."""
    samples: dict[str, int] = {}
    busy: dict[str, float] = {}
    for c in timeline.chunks:
        node = timeline.node_of(c.worker)
        samples[node] = samples.get(node, 0) + c.samples
        busy[node] = busy.get(node, 0.0) + c.busy
    cpus: dict[str, float] = {}
    for w in timeline.workers:
        amount = w.gpus if w.gpus else w.cpus
        if amount:
            cpus[w.node] = cpus.get(w.node, 0.0) + float(amount)
    nodes = list(dict.fromkeys([w.node for w in timeline.workers] + list(samples)))
    rates = {n: samples.get(n, 0) / busy[n] if busy.get(n) else 0.0 for n in nodes}
    total_samples = sum(samples.values()) or 1
    total_rate = sum(rates.values()) or 1.0
    total_cpus = sum(cpus.values())
    return [
        NodeShare(
            node=n,
            samples=samples.get(n, 0),
            busy=busy.get(n, 0.0),
            rate=rates[n],
            sample_share=samples.get(n, 0) / total_samples,
            capacity_share=rates[n] / total_rate,
            cpu_share=cpus[n] / total_cpus if total_cpus and n in cpus else None,
        )
        for n in nodes
    ]


@dataclasses.dataclass(frozen=True)
class Throughput:
    """Samples per second in time bins (bin edges in seconds since loadgen's start)."""

    edges: np.ndarray
    overall: np.ndarray  # computed, all workers
    per_node: dict[str, np.ndarray]  # computed, per node
    answered: np.ndarray  # samples answered to loadgen in each bin (driver clock)


def throughput(timeline: Timeline, analysis: Analysis, bins: int = 60) -> Throughput:
    """Throughput over time: each chunk's samples spread over its compute span.

    Args:
        bins: number of time bins between the first compute start and the
            last answer (fewer when the run is very short).
    """
    bars = [(lane.node, b) for lane in analysis.lanes for b in lane.bars]
    if not bars:
        empty = np.zeros(0)
        return Throughput(np.zeros(1), empty, {n: empty for n in analysis.nodes}, empty)
    first = min(b.start for _, b in bars)
    last = max(max(b.end for _, b in bars), analysis.dispatch_end or 0.0)
    edges = np.linspace(min(first, 0.0), last, max(2, bins + 1))
    width = np.diff(edges)
    starts = np.array([b.start for _, b in bars])
    ends = np.array([b.end for _, b in bars])
    counts = np.array([b.samples for _, b in bars], dtype=float)
    node_of = np.array([n for n, _ in bars])
    span = np.maximum(ends - starts, 1e-9)
    sums = {n: np.zeros(len(width)) for n in analysis.nodes}
    for lo in range(0, len(bars), 8192):  # in blocks: edges x chunks floats stay a few MB
        part = slice(lo, lo + 8192)
        # Samples of each chunk done by each edge (linear over its compute span), then per bin.
        done = counts[None, part] * np.clip((edges[:, None] - starts[None, part]) / span[None, part], 0.0, 1.0)
        per_bin = np.diff(done, axis=0)
        for n in analysis.nodes:
            sums[n] += per_bin[:, node_of[part] == n].sum(axis=1)
    per_node = {n: sums[n] / width for n in analysis.nodes}
    backs = np.array([c.back - analysis.origin for c in timeline.chunks])
    answered, _ = np.histogram(backs, bins=edges, weights=[c.samples for c in timeline.chunks])
    return Throughput(edges, sum(sums.values()) / width, per_node, answered.astype(float))


@dataclasses.dataclass(frozen=True)
class LengthPoint:
    """One chunk's real sequence lengths at the middle of its compute span."""

    t: float
    node: str
    mean: float
    low: int
    high: int
    samples: int


def length_points(timeline: Timeline, analysis: Analysis) -> list[LengthPoint]:
    """The chunks' sequence lengths over the run (one point per chunk)."""
    spans = {(lane.worker, b.chunk): b for lane in analysis.lanes for b in lane.bars}
    points = []
    for c in timeline.chunks:
        bar = spans[(c.worker, c.chunk)]
        points.append(LengthPoint((bar.start + bar.end) / 2, timeline.node_of(c.worker), c.len_mean, c.len_min, c.len_max, c.samples))
    return points


@dataclasses.dataclass(frozen=True)
class RunFigures:
    """A run's label and headline figures, for the comparison of several runs."""

    label: str
    mode: str
    nodes: int
    backend: str
    model: str
    samples_per_second: float | None


def scaling_efficiency(rows: Sequence[RunFigures]) -> list[float | None]:
    """Each run's samples/s per node against the fewest-node run of its kind (same mode, backend, model).

    1.0 is perfect scaling; None where a run has no samples/s or no baseline.
    """
    base: dict[tuple[str, str, str], RunFigures] = {}
    for row in rows:
        if row.samples_per_second and row.nodes:
            key = (row.mode, row.backend, row.model)
            if key not in base or row.nodes < base[key].nodes:
                base[key] = row
    out: list[float | None] = []
    for row in rows:
        ref = base.get((row.mode, row.backend, row.model))
        if not (row.samples_per_second and row.nodes and ref):
            out.append(None)
            continue
        out.append((row.samples_per_second / row.nodes) / (ref.samples_per_second / ref.nodes))
    return out
