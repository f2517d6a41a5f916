"""Adaptive chunking with simulated workers of very different rates (a discrete-event clock, no sleeping).

The simulation models what matters to the dispatcher: each worker runs its
chunks one after the other at its own rate, a chunk reaches it ``latency``
seconds after being handed out and its answer comes back ``latency`` later,
and (optionally) the driver spends ``driver_cost`` seconds per completed
sample and ``chunk_cost`` per hand-out, during which it does nothing else.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from orchestrator.bench.chunking import FixedChunks, QueryChunks, Sizing
from orchestrator.bench.query import compact_indices
from orchestrator.bench.dispatcher import ChunkResult, Dispatcher, WorkerLost, make_chunks


class SimExecutor:
    """Workers with fixed rates on a simulated clock (see the module docstring)."""

    def __init__(self, rates: dict[str, float], *, latency: float = 0.001, driver_cost: float = 0.0,
                 chunk_cost: float = 0.0, die_after: dict[str, int] | None = None) -> None:
        self.rates = rates
        self.latency = latency
        self.driver_cost = driver_cost
        self.chunk_cost = chunk_cost
        self.die_after = die_after or {}
        self.now = 0.0
        self.free_at = {w: 0.0 for w in rates}
        self.handles: dict[int, tuple] = {}
        self.runs: dict[str, list[tuple[float, float, int]]] = collections.defaultdict(list)  # (start, end, samples)
        self.started = collections.Counter()

    def clock(self) -> float:
        return self.now

    def submit(self, worker, chunk):
        self.now += self.chunk_cost  # the driver's own cost of a hand-out (cut, submit, result)
        self.started[worker] += 1
        dies = worker in self.die_after and self.started[worker] > self.die_after[worker]
        start = max(self.now + self.latency, self.free_at[worker])
        end = start + len(chunk) / self.rates[worker]
        if not dies:
            self.free_at[worker] = end
            self.runs[worker].append((start, end, len(chunk)))
        handle = len(self.handles)
        self.handles[handle] = (worker, chunk, start, end, end + self.latency, dies)
        return handle

    def wait(self, handles, timeout):
        soonest = min(self.handles[h][4] for h in handles)
        self.now = max(self.now, min(soonest, self.now + timeout))  # blocks at most `timeout`
        return [h for h in handles if self.handles[h][4] <= self.now]

    def result(self, handle):
        worker, chunk, start, end, _, dies = self.handles[handle]
        if dies:
            raise WorkerLost(f"{worker} died")
        return ChunkResult(chunk.chunk_id, len(chunk), end - start, started=start, finished=end)

    def complete(self, chunk):
        self.now += self.driver_cost * len(chunk)

    def idle_before(self, worker: str, until: float) -> float:
        """Seconds ``worker`` sat idle between its first chunk's start and ``until``."""
        idle, last = 0.0, None
        for start, end, _ in self.runs[worker]:
            if last is not None and start < until:
                idle += max(0.0, min(start, until) - last)
            last = end
        return idle


def _query(n: int, seed: int = 0, qsl: int = 5147):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 385, qsl).astype(np.int32)
    indices = rng.integers(0, qsl, n)
    ids = np.arange(10**9, 10**9 + n, dtype=np.uint64)  # loadgen ids are opaque 64-bit numbers
    return ids, indices, lengths


def _dispatch(sim: SimExecutor, source, workers, **kw):
    answered = collections.Counter()
    indices_seen = {}

    def on_complete(chunk, result, worker):
        assert result.payload == len(chunk)
        sim.complete(chunk)
        for q, s in zip(np.asarray(chunk.query_ids).tolist(), np.asarray(chunk.sample_indices).tolist()):
            answered[q] += 1
            indices_seen[q] = s

    report = Dispatcher(sim, workers, on_complete=on_complete, clock=sim.clock, **kw).run(source)
    return report, answered, indices_seen


def _last_chunk_duration(sim: SimExecutor, worker: str) -> float:
    start, end, _ = sim.runs[worker][-1]
    return end - start


@pytest.mark.parametrize("rates", [
    {"gpu": 9500.0, "cpu": 40.0},
    {"gpu-a": 9500.0, "gpu-b": 9000.0, "mid": 1500.0, "cpu-a": 40.0, "cpu-b": 25.0},
])
def test_slowest_worker_finishes_within_one_of_its_chunks_of_the_fastest(rates):
    ids, indices, lengths = _query(300_000)
    sim = SimExecutor(rates)
    source = QueryChunks(ids, indices, lengths, list(rates), Sizing(quantum=8), qsl_size=len(lengths), clock=sim.clock)
    report, answered, seen = _dispatch(sim, source, list(rates))

    # Every sample answered exactly once, each with its own query id and sample index.
    assert len(answered) == len(ids) and set(answered.values()) == {1}
    expected = dict(zip(ids.tolist(), indices.tolist()))
    assert seen == expected

    last_end = {w: sim.runs[w][-1][1] for w in rates}
    fastest = max(rates, key=rates.get)
    for worker in rates:
        assert last_end[worker] - last_end[fastest] <= _last_chunk_duration(sim, worker) + 1e-9, (worker, last_end)
    # Nobody finishes long before the end either: the whole run is close to the ideal.
    ideal = len(ids) / sum(rates.values())
    assert max(last_end.values()) <= ideal * 1.03 + 0.05
    # Work is shared by rate.
    for worker, rate in rates.items():
        assert report.workers[worker].samples == pytest.approx(len(ids) * rate / sum(rates.values()), rel=0.05, abs=50)


def test_a_fast_worker_is_never_idle_and_a_slow_one_holds_few_samples_at_the_end():
    rates = {"gpu": 9500.0, "cpu": 40.0}
    ids, indices, lengths = _query(200_000)
    sim = SimExecutor(rates, latency=0.02)  # a round trip of 40 ms, longer than the base lead
    source = QueryChunks(ids, indices, lengths, list(rates), Sizing(quantum=8), qsl_size=len(lengths), clock=sim.clock)
    _dispatch(sim, source, list(rates))
    end = max(e for runs in sim.runs.values() for _, e, _ in runs)
    # The GPU worker idled for at most the round trips before its rate was known.
    assert sim.idle_before("gpu", end) < 0.01 * end, sim.idle_before("gpu", end)
    assert source.lead("gpu") > Sizing().lead_seconds  # it grew to cover the round trip
    # The CPU worker's last chunks are small: at the end it holds a fraction of a second of work.
    tail = [n for _, _, n in sim.runs["cpu"][-2:]]
    assert sum(tail) / rates["cpu"] <= 2 * Sizing().target_seconds
    # Chunks are sized to their worker: GPU chunks are hundreds of times larger than CPU ones.
    gpu_sizes = [n for _, _, n in sim.runs["gpu"]]
    cpu_sizes = [n for _, _, n in sim.runs["cpu"]]
    assert np.median(gpu_sizes) >= 100 * np.median(cpu_sizes)
    assert all(n % 8 == 0 for n in gpu_sizes[:-3])  # whole batches, but for the last few


def test_driver_bound_run_still_answers_everything_once():
    # A driver that spends 2 us per sample against 8 workers at 50k samples/s: the driver is the bottleneck.
    rates = {f"w{i}": 50_000.0 for i in range(8)}
    ids, indices, lengths = _query(400_000)
    sim = SimExecutor(rates, driver_cost=2e-6)
    source = QueryChunks(ids, indices, lengths, list(rates), Sizing(quantum=256), qsl_size=len(lengths), clock=sim.clock)
    report, answered, _ = _dispatch(sim, source, list(rates))
    assert len(answered) == len(ids) and set(answered.values()) == {1}
    # Driver-bound: the run lasts about the driver's own time, not less.
    assert sim.now >= 2e-6 * len(ids)
    assert len(report.round_trip_seconds) == sum(w.chunks for w in report.workers.values())


class _NoPace(QueryChunks):
    """The adaptive source as it was before it took the driver's pace into account."""

    def pace(self, samples, busy_seconds):
        pass


def test_a_driver_bound_run_sizes_chunks_by_the_drivers_pace():
    # 16 workers at 250k samples/s against a driver that completes 2 million a second and spends 2 ms
    # per hand-out: sized by the workers' rates alone, chunks shrink to the tail's minimum for most
    # of the run, and every extra chunk costs the driver's one thread.
    rates = {f"w{i}": 250_000.0 for i in range(16)}
    ids, indices, lengths = _query(2_000_000)
    runs = {}
    for kind in (QueryChunks, _NoPace):
        sim = SimExecutor(rates, driver_cost=0.5e-6, chunk_cost=2e-3)
        source = kind(ids, indices, lengths, list(rates), Sizing(quantum=8), qsl_size=len(lengths), clock=sim.clock)
        report, answered, _ = _dispatch(sim, source, list(rates))
        assert len(answered) == len(ids) and set(answered.values()) == {1}
        runs[kind] = (sum(w.chunks for w in report.workers.values()), sim.now)
    (chunks, end), (chunks_before, end_before) = runs[QueryChunks], runs[_NoPace]
    assert chunks <= 0.75 * chunks_before, runs
    assert end < end_before, runs
    # The driver's floor is its completions plus its hand-outs: within 15% of it.
    assert end <= 1.15 * (0.5e-6 * len(ids) + 2e-3 * chunks), runs


def test_a_worker_faster_than_the_largest_chunk_holds_a_few_chunks_not_a_seconds_worth():
    ids, indices, lengths = _query(1_000_000)
    source = QueryChunks(ids, indices, lengths, ["gpu"], Sizing(max_chunk=4096), qsl_size=len(lengths), clock=lambda: 0.0)
    probes = [source.take("gpu"), source.take("gpu")]
    assert source.take("gpu") is None  # two probes in flight until the first answer
    for chunk in probes:  # 1 million samples/s
        source.answered("gpu", chunk, ChunkResult(chunk.chunk_id, len(chunk), len(chunk) / 1e6))
    handed = []
    while (chunk := source.take("gpu")) is not None:
        handed.append(len(chunk))
    # One chunk of 4,096 lasts 4 ms at its rate: it holds about that plus its lead (50 ms), not the
    # 0.5 s of target_seconds (which would be 120 chunks handed out before any answer is handled).
    assert 2 <= len(handed) <= 20 and max(handed) == 4096, handed


def test_workers_not_yet_measured_do_not_make_windows_sorted_once_a_rate_is_known():
    ids, indices, lengths = _query(4 * 65_536)
    source = QueryChunks(ids, indices, lengths, ["gpu", "new"], Sizing(), qsl_size=len(lengths), clock=lambda: 0.0)
    first = source.take("gpu")
    assert source.store.sorted_windows == 1  # no rate known: the first window is sorted (slow CPU workers may need it)
    chunk = first
    while source.store.sorted_windows + source.store.plain_windows < 3:
        source.answered("gpu", chunk, ChunkResult(chunk.chunk_id, len(chunk), len(chunk) / 1e6))  # 1 million/s
        chunk = source.take("gpu")
        assert chunk is not None
    # "new" has not answered yet; the fast worker's chunks are large: the later windows stay plain.
    assert source.store.sorted_windows == 1 and source.store.plain_windows >= 2


def test_lost_worker_chunks_rerun_exactly_once_with_adaptive_chunks():
    rates = {"a": 5000.0, "b": 5000.0, "c": 200.0}
    ids, indices, lengths = _query(50_000)
    sim = SimExecutor(rates, die_after={"b": 3})
    lost = []
    source = QueryChunks(ids, indices, lengths, list(rates), Sizing(quantum=8), qsl_size=len(lengths), clock=sim.clock)
    report, answered, _ = _dispatch(sim, source, list(rates), on_worker_lost=lambda w, r, c: lost.append((w, c)))
    assert len(answered) == len(ids) and set(answered.values()) == {1}
    assert report.lost_workers == ["b"] and report.rerun_samples == sum(len(c) for _, cs in lost for c in cs) > 0
    assert source.exhausted() and source.left() == 0


def test_fixed_sizing_cuts_every_chunk_alike():
    ids, indices, lengths = _query(1000)
    sim = SimExecutor({"a": 100.0, "b": 1000.0})
    source = QueryChunks(ids, indices, lengths, ["a", "b"], Sizing(fixed=64), qsl_size=len(lengths), clock=sim.clock)
    _, answered, _ = _dispatch(sim, source, ["a", "b"])
    sizes = [n for runs in sim.runs.values() for _, _, n in runs]
    assert len(answered) == 1000 and sorted(sizes)[1:] == [64] * (len(sizes) - 1)


def test_small_chunks_come_sorted_longest_first_with_compact_indices():
    lengths = np.array([10, 300, 50, 384, 120], dtype=np.int32)
    source = QueryChunks([7, 8, 9, 10, 11], [0, 1, 2, 3, 4], lengths, ["w"], Sizing(fixed=2))
    chunk = source.take("w")
    assert list(chunk.query_ids) == [10, 8] and chunk.sample_indices.tolist() == [3, 1]
    assert chunk.sample_indices.dtype == np.uint16
    assert compact_indices(np.array([0, 70000])).dtype == np.uint32
    assert compact_indices([1, 2, 3], qsl_size=5).dtype == np.uint16
    # What a failed run answers empty: every sample outside the answered chunks.
    second = source.take("w")
    assert sorted(source.ids_except({chunk.chunk_id})) == [7, 9, 11]
    assert sorted(source.ids_except({chunk.chunk_id, second.chunk_id})) == [7]


def _cut_all(source, worker="w"):
    cut = []
    while not source.exhausted():
        chunk = source.take(worker)
        source.answered(worker, chunk, ChunkResult(chunk.chunk_id, len(chunk), 0.0))
        cut.append(chunk)
    return cut


def test_a_large_query_is_sorted_per_window_when_chunks_are_small():
    from orchestrator.bench.query import WINDOW

    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 385, 5147).astype(np.int32)
    n = 2 * WINDOW + 123
    indices = rng.integers(0, 5147, n)
    ids = (np.arange(n) + 5).tolist()
    source = QueryChunks(ids, indices.tolist(), lengths, ["w"], Sizing(fixed=1000), qsl_size=5147)
    cut = _cut_all(source)
    handed = [i for c in cut for i in c.query_ids]
    assert sorted(handed) == ids  # every sample once
    handed_idx = np.concatenate([c.sample_indices for c in cut])
    for first in range(0, n, WINDOW):
        assert (np.diff(lengths[handed_idx[first : first + WINDOW]]) <= 0).all()  # longest first per window
    # Each id still goes with its own sample index.
    assert dict(zip(handed, handed_idx.tolist())) == dict(zip(ids, indices.tolist()))
    assert source.store.sorted_windows == 3 and source.store.plain_windows == 0


def test_large_chunks_keep_loadgen_order_and_its_own_id_objects():
    from orchestrator.bench.query import WINDOW

    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 385, 100).astype(np.int32)
    n = WINDOW + 10
    ids = list(range(10**12, 10**12 + n))
    indices = rng.integers(0, 100, n).tolist()
    source = QueryChunks(ids, indices, lengths, ["w"], Sizing(fixed=4096), qsl_size=100)
    cut = _cut_all(source)
    assert [i for c in cut for i in c.query_ids] == ids and cut[0].query_ids[0] is ids[0]
    assert np.concatenate([c.sample_indices for c in cut]).tolist() == indices
    assert source.store.plain_windows == 2 and source.store.sorted_windows == 0
    assert source.ids_except(set()) == []


def test_fixed_chunks_keep_the_old_contract():
    lengths = np.arange(1, 41)
    chunks = make_chunks(list(range(40)), list(range(40)), lengths, 4)
    source = FixedChunks(chunks, in_flight=2)
    assert source.take("a") is chunks[0] and source.take("a") is chunks[1] and source.take("a") is None
    source.lost("a", chunks[1])
    assert source.take("a") is None and source.take("b") is chunks[1]
    assert source.left() == 40 - 8


def test_ints_to_array_keeps_every_value_and_refuses_one_out_of_range():
    import struct

    from orchestrator.bench.query import ints_to_array

    ids = [0, 1, 2**48 + 7, 2**64 - 1]  # loadgen's ids are pointers: the whole unsigned 64-bit range
    assert ints_to_array(ids, np.uint64).tolist() == ids
    assert ints_to_array([0, 5146, 65535], np.uint16).dtype == np.uint16
    assert ints_to_array([70000], np.uint32).tolist() == [70000]
    assert ints_to_array([], np.uint16).size == 0
    with pytest.raises(struct.error):
        ints_to_array([65536], np.uint16)
