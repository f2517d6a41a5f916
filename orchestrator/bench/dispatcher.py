"""Pull dispatcher: the Offline query cut into chunks that workers pull.

Plain logic over an ``Executor`` so it can be tested with fake workers; the
Ray executor lives in ``orchestrator.bench.workers``, and how chunks are cut
and sized (fixed, or adapted to each worker's rate) in
``orchestrator.bench.chunking``.

Contract:
- every chunk carries the loadgen query ids of its samples (answers are
  never matched by position or arrival order);
- a worker is handed a chunk whenever the chunk source says it should hold
  more work (``in_flight`` chunks each with fixed chunks), so faster workers
  do more chunks;
- results are handled in completion order;
- a worker that dies gives its unfinished chunks back; the run finishes
  with every chunk completed exactly once, or fails when no worker is left.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Callable, Hashable, Protocol, Sequence

import numpy as np

from orchestrator.errors import RunError


@dataclasses.dataclass(frozen=True, eq=False)
class Chunk:
    """A slice of the Offline query: loadgen query ids and their sample indices.

    ``query_ids`` and ``sample_indices`` are sequences of the same length:
    tuples (``make_chunks``) or numpy arrays (views into the query, from
    ``chunking.QueryChunks``); use ``len()`` and ``np.asarray()``. Chunks
    compare by identity.
    """

    chunk_id: int
    query_ids: Sequence[int]
    sample_indices: Sequence[int]

    def __len__(self) -> int:
        return len(self.sample_indices)


@dataclasses.dataclass
class ChunkResult:
    """What a worker returns for one chunk.

    Attributes:
        chunk_id: the chunk answered.
        payload: per-sample answers in the chunk's sample order (logits in
            accuracy mode, a small summary in performance mode); from Ray
            workers, an ``orchestrator.bench.payload.encode`` dict.
        seconds: time the worker spent computing.
        started, finished: wall-clock times (``time.time()`` on the worker's
            node) when the worker began and ended the chunk; 0.0 when unknown.
    """

    chunk_id: int
    payload: Any
    seconds: float
    started: float = 0.0
    finished: float = 0.0


class WorkerLost(Exception):
    """Raised by ``Executor.result`` when the worker died before answering."""


class DispatchStopped(RunError):
    """The dispatch was told to stop (an interrupt) before every chunk was done."""


class Executor(Protocol):
    """How the dispatcher talks to workers (Ray in production, fakes in tests)."""

    def submit(self, worker: str, chunk: Chunk) -> Hashable:
        """Queue ``chunk`` on ``worker``; returns a handle to wait on."""

    def wait(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]:
        """Handles that are ready (finished or failed): all that are, at least one unless timed out."""

    def result(self, handle: Hashable) -> ChunkResult:
        """The chunk's result; raises ``WorkerLost`` if its worker died."""


@dataclasses.dataclass
class WorkerStats:
    """Per-worker bookkeeping for the summary."""

    name: str
    samples: int = 0
    chunks: int = 0
    seconds: float = 0.0
    alive: bool = True
    lost_reason: str | None = None


@dataclasses.dataclass
class DispatchReport:
    """What happened during one dispatch."""

    workers: dict[str, WorkerStats]
    lost_workers: list[str]
    rerun_samples: int
    wall_seconds: float
    # Per answered chunk, in completion order: seconds from hand-out to its answer being handled.
    round_trip_seconds: list[float] = dataclasses.field(default_factory=list)


def make_chunks(
    query_ids: Sequence[int], sample_indices: Sequence[int], lengths: np.ndarray, chunk_size: int
) -> list[Chunk]:
    """Sort the query's samples by real length (longest first) and cut them into chunks.

    Longest first keeps each chunk's sequences alike (so padding removal
    pays off) and leaves the short, cheap chunks for the end of the run,
    where they even out the finishing times of the workers.

    Args:
        query_ids: loadgen ids, one per issued sample.
        sample_indices: the QSL index of each issued sample (same order).
        lengths: real length of every QSL sample, indexed by sample index.
        chunk_size: samples per chunk (>= 1).
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    if len(query_ids) != len(sample_indices):
        raise ValueError("query_ids and sample_indices differ in length")
    ids = np.asarray(query_ids, dtype=np.uint64)
    idx = np.asarray(sample_indices, dtype=np.int64)
    # Stable sort on -length keeps loadgen's order among equal lengths.
    order = np.argsort(-lengths[idx], kind="stable")
    chunks = []
    for chunk_id, start in enumerate(range(0, len(order), chunk_size)):
        part = order[start : start + chunk_size]
        chunks.append(
            Chunk(chunk_id, tuple(int(q) for q in ids[part]), tuple(int(s) for s in idx[part]))
        )
    return chunks


class Dispatcher:
    """Runs chunks on workers with a pull model; see the module docstring.

    Args:
        executor: submits chunks to workers and reports their completion.
        workers: names of the workers available at the start.
        on_complete: called once per chunk, in completion order, from the
            thread that calls ``run`` (loadgen completions must come from one
            long-lived thread: call ``run`` from such a thread).
        on_worker_lost: called with (worker, reason, requeued_chunks).
        on_submit: called with (chunk, worker) each time a chunk is handed out
            (re-runs after a lost worker included).
        stop: when set, no more chunks are handed out and ``run`` raises
            ``DispatchStopped`` at its next wake-up (at most ``poll_seconds``).
        in_flight: chunks kept queued per worker when ``run`` is given a list
            of chunks (>= 1; 2 hides the gap between one chunk's end and the
            next one's arrival). A ``ChunkSource`` decides this itself.
        poll_seconds: how long one wait may block.
        clock: seconds, for the round-trip figures (injected by simulations).
    """

    def __init__(
        self,
        executor: Executor,
        workers: Sequence[str],
        *,
        on_complete: Callable[[Chunk, ChunkResult, str], None],
        on_worker_lost: Callable[[str, str, list[Chunk]], None] | None = None,
        on_submit: Callable[[Chunk, str], None] | None = None,
        stop: threading.Event | None = None,
        in_flight: int = 2,
        poll_seconds: float = 0.5,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not workers:
            raise RunError("no worker to run the query on")
        if in_flight < 1:
            raise ValueError("in_flight must be >= 1")
        self._executor = executor
        self._stats = {name: WorkerStats(name) for name in workers}
        self._on_complete = on_complete
        self._on_worker_lost = on_worker_lost
        self._on_submit = on_submit
        self._stop = stop
        self._in_flight = in_flight
        self._poll = poll_seconds
        self._clock = clock

    def run(self, work: Any) -> DispatchReport:
        """Run every chunk exactly once; returns the per-worker report.

        Args:
            work: a sequence of ``Chunk`` (each worker keeps ``in_flight`` of
                them queued), or a ``chunking.ChunkSource`` that cuts and
                sizes chunks as workers need them.

        Raises:
            RunError: every worker was lost before the chunks were done.
            DispatchStopped: ``stop`` was set before the chunks were done.
        """
        from orchestrator.bench.chunking import FixedChunks

        source = work if hasattr(work, "take") else FixedChunks(list(work), self._in_flight)
        clock = self._clock
        started = clock()
        pending: dict[Hashable, tuple[str, Chunk, float]] = {}
        done: set[int] = set()
        lost: list[str] = []
        rerun = 0
        round_trips: list[float] = []
        handled = 0  # samples answered and completed
        waited = 0.0  # seconds blocked in the executor's wait

        def fill() -> bool:
            # One pass, one chunk per worker, so at the start every worker gets work; whether any was
            # handed out. The next pass comes after the answers that are ready by then are handled (a
            # wait that does not block): answers do not sit behind a long run of hand-outs.
            progressed = False
            for name, stats in self._stats.items():
                if not stats.alive:
                    continue
                chunk = source.take(name)
                if chunk is None:
                    continue
                pending[self._executor.submit(name, chunk)] = (name, chunk, clock())
                if self._on_submit:
                    self._on_submit(chunk, name)
                progressed = True
            return progressed

        def stopped() -> bool:
            return self._stop is not None and self._stop.is_set()

        more = fill() if not stopped() else False
        while pending or (not source.exhausted() and stopped()):
            if stopped():
                left = source.left() + sum(len(c) for _, c, _ in pending.values())
                raise DispatchStopped(f"stopped with {left} samples not yet answered")
            wait_started = clock()
            ready = self._executor.wait(list(pending), 0.0 if more else self._poll)
            waited += clock() - wait_started
            for handle in ready:
                name, chunk, handed_out = pending.pop(handle)
                stats = self._stats[name]
                try:
                    result = self._executor.result(handle)
                except WorkerLost as exc:
                    rerun += len(chunk)
                    source.lost(name, chunk)
                    if stats.alive:
                        stats.alive = False
                        stats.lost_reason = str(exc) or "worker died"
                        lost.append(name)
                    if self._on_worker_lost:
                        self._on_worker_lost(name, stats.lost_reason or "", [chunk])
                    continue
                if result.chunk_id != chunk.chunk_id or chunk.chunk_id in done:
                    raise RunError(
                        f"worker {name} answered chunk {result.chunk_id} for chunk {chunk.chunk_id}"
                    )
                done.add(chunk.chunk_id)
                stats.samples += len(chunk)
                stats.chunks += 1
                stats.seconds += result.seconds
                self._on_complete(chunk, result, name)
                # After on_complete: a chunk whose completion failed is still the source's to account for.
                source.answered(name, chunk, result)
                round_trips.append(clock() - handed_out)
                handled += len(chunk)
            # The driver's own pace (its time not spent waiting for workers): a cap on how fast the run can go.
            source.pace(handled, clock() - started - waited)
            if not source.exhausted() and not any(s.alive for s in self._stats.values()):
                raise RunError(
                    f"every worker was lost ({', '.join(lost)}); "
                    f"{source.left()} samples were left unanswered"
                )
            more = fill() if not stopped() else False
        return DispatchReport(
            workers=dict(self._stats),
            lost_workers=lost,
            rerun_samples=rerun,
            wall_seconds=clock() - started,
            round_trip_seconds=round_trips,
        )
