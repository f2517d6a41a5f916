"""How the Offline query is cut into chunks: fixed sizes, or sizes adapted to each worker.

A ``ChunkSource`` decides, each time the dispatcher asks, whether a worker
gets a chunk now and which one. Two sources:

- ``FixedChunks``: chunks cut beforehand (``--chunk-size``, tests); each
  worker keeps ``in_flight`` of them queued.
- ``QueryChunks``: the whole query (``query.QueryStore``), cut when a worker
  needs work, at a size that fits the worker's measured rate:

  * a chunk lasts about ``target_seconds`` on its worker, so a fast GPU worker
    gets big chunks (few round trips) and a slow CPU worker small ones;
  * a worker is handed another chunk while the work it holds lasts less than
    one chunk plus its *lead*, the queued time that hides the round trip
    between one chunk's end and the next one's arrival; the lead grows when
    the worker reports idle gaps between chunks (measured on its own clock),
    so a fast worker is never left idle, and it is at least one chunk
    (two in flight) however slow the worker;
  * towards the end, chunks shrink (guided self-scheduling: each new chunk
    lasts half of what is left of the worker's share of the remaining
    work; the time left is counted at the workers' rates, or at the driver's
    own pace when that is lower: a driver-bound run keeps large chunks until
    its real end), and a worker that already holds more than the time left for
    everyone gets nothing more, so every worker finishes at about the same
    time and the slowest one finishes within one of its own chunks of the
    fastest. What a worker holds is counted in time, from when it will be
    done with it at its rate (``busy_until``), so that work already half done
    is not counted whole.

The query itself (loadgen's lists, prepared window by window, sorted
longest first where chunks are small) is ``orchestrator.bench.query``.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable, Protocol, Sequence

import numpy as np

from orchestrator.bench.dispatcher import Chunk, ChunkResult
from orchestrator.bench.query import SORT_BELOW, QueryStore, compact_indices  # noqa: F401 - re-exported


class ChunkSource(Protocol):
    """Which chunk a worker gets next (see the module docstring)."""

    def take(self, worker: str) -> Chunk | None:
        """The next chunk for ``worker``, or None if it should not get one now."""

    def answered(self, worker: str, chunk: Chunk, result: ChunkResult) -> None:
        """``worker`` answered ``chunk``."""

    def lost(self, worker: str, chunk: Chunk) -> None:
        """``worker`` died holding ``chunk``: it must be handed out again."""

    def left(self) -> int:
        """Samples not yet handed out (re-runs included)."""

    def exhausted(self) -> bool:
        """Every sample has been handed out (none waits for a re-run)."""

    def pace(self, samples: int, busy_seconds: float) -> None:
        """The dispatcher has handled ``samples`` answered samples in ``busy_seconds`` of its own time (not waiting)."""


class FixedChunks:
    """Chunks cut beforehand; each worker keeps ``in_flight`` of them queued."""

    def __init__(self, chunks: Sequence[Chunk], in_flight: int = 2) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be >= 1")
        self._queue = collections.deque(chunks)
        self._in_flight = in_flight
        self._out: collections.Counter[str] = collections.Counter()
        self._dead: set[str] = set()

    def take(self, worker: str) -> Chunk | None:
        if not self._queue or worker in self._dead or self._out[worker] >= self._in_flight:
            return None
        self._out[worker] += 1
        return self._queue.popleft()

    def answered(self, worker: str, chunk: Chunk, result: ChunkResult) -> None:
        self._out[worker] -= 1

    def lost(self, worker: str, chunk: Chunk) -> None:
        self._out[worker] -= 1
        self._dead.add(worker)
        self._queue.appendleft(chunk)

    def left(self) -> int:
        return sum(len(c) for c in self._queue)

    def exhausted(self) -> bool:
        return not self._queue

    def pace(self, samples: int, busy_seconds: float) -> None:
        pass  # chunks cut beforehand: nothing to size


@dataclasses.dataclass(frozen=True)
class Sizing:
    """How ``QueryChunks`` sizes chunks.

    Attributes:
        fixed: every chunk this many samples, ``fixed_in_flight`` queued per
            worker (``--chunk-size``); None: adapted to each worker.
        quantum: adapted sizes are multiples of this (the batch size), so
            batches stay full.
        first: the first probe chunk before a worker's rate is known (default:
            two batches); the second probe, in flight with it, is four times
            larger, so a fast worker is still busy when the first answer
            tells its rate. Probes never exceed half of a fair share of what
            is left (a short run is not handed out in probes).
        target_seconds: how long one chunk should take its worker.
        min_seconds: tail chunks last at least this (each costs a round trip).
        max_chunk: the most samples one chunk carries (bounds the memory and
            the object-store space of one answer).
        lead_seconds, max_lead_seconds: the queued time kept beyond the
            running chunk at the start, and its upper bound.
        growth: a chunk is at most this many times the worker's previous one
            (a rate measured on a short probe may be off).
    """

    fixed: int | None = None
    fixed_in_flight: int = 2
    quantum: int = 1
    first: int | None = None
    target_seconds: float = 0.5
    min_seconds: float = 0.02
    # 96 KiB of 2-byte indices: a chunk's arguments stay inline in Ray's task (up to 100 KiB), out of the object store.
    max_chunk: int = 49152
    lead_seconds: float = 0.05
    max_lead_seconds: float = 1.0
    growth: float = 16.0

    def __post_init__(self) -> None:
        if self.fixed is not None and self.fixed < 1:
            raise ValueError("fixed chunk size must be >= 1")
        if self.quantum < 1 or self.max_chunk < 1 or self.target_seconds <= 0:
            raise ValueError("quantum, max_chunk and target_seconds must be positive")


# The driver's pace is used once it has been busy this long (a few chunks' completions, not one).
_PACE_MIN_BUSY_SECONDS = 0.05
# Idle gaps shorter than this between two chunks of one worker are noise (an actor's own task switch).
_GAP_NOISE_SECONDS = 0.002


@dataclasses.dataclass
class _Worker:
    lead: float
    alive: bool = True
    samples_out: int = 0
    chunks_out: int = 0
    last_size: int = 0
    # Decayed sums: the rate follows changes (chunks go from long to short sequences).
    done_samples: float = 0.0
    done_seconds: float = 0.0
    last_finished: float | None = None
    busy_until: float = 0.0  # on the driver's clock: when it will be done with what it holds, at its rate

    @property
    def rate(self) -> float | None:
        return self.done_samples / self.done_seconds if self.done_seconds > 0 else None


class QueryChunks:
    """The query as sorted arrays, cut into chunks sized for each worker; see the module docstring.

    Args:
        query_ids: loadgen's id of every issued sample.
        sample_indices: the QSL index of every issued sample (same order).
        lengths: real length of every QSL sample, indexed by sample index.
        workers: names of the workers known at the start (others are added
            when they first ask for a chunk).
        sizing: how chunks are sized.
        qsl_size: number of QSL samples (for the indices' dtype).
        clock: the driver's clock in seconds (injected by simulations).
    """

    def __init__(
        self,
        query_ids: Sequence[int],
        sample_indices: Sequence[int],
        lengths: np.ndarray,
        workers: Sequence[str] = (),
        sizing: Sizing | None = None,
        *,
        qsl_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = QueryStore(query_ids, sample_indices, lengths, qsl_size)
        self._outstanding: dict[int, Chunk] = {}  # handed out (or waiting for a re-run), not yet answered
        self.sizing = sizing or Sizing()
        self._clock = clock
        self._pos = 0
        self._next_id = 0
        self._requeued: collections.deque[Chunk] = collections.deque()
        self._workers = {name: _Worker(lead=self.sizing.lead_seconds) for name in workers}
        self._driver_rate: float | None = None  # samples/s the dispatcher handles when it never waits

    def __len__(self) -> int:
        return len(self._store)

    @property
    def store(self) -> QueryStore:
        return self._store

    def ids_except(self, answered: set[int]) -> list[int]:
        """The query ids of every sample not in an answered chunk (to answer them empty when a run fails)."""
        ids = [i for chunk in self._outstanding.values() if chunk.chunk_id not in answered for i in chunk.query_ids]
        return ids + self._store.rest(self._pos)

    # -- ChunkSource ------------------------------------------------------------

    def take(self, worker: str) -> Chunk | None:
        state = self._workers.get(worker)
        if state is None:
            state = self._workers[worker] = _Worker(lead=self.sizing.lead_seconds)
        if not state.alive or self.exhausted():
            return None
        now = self._clock()
        size = self._size_for(state, now)
        if size is None:
            return None
        if self._requeued:
            chunk = self._requeued.popleft()
        else:
            stop = min(len(self), self._pos + size)
            # Do not leave a sliver behind that would cost a round trip of its own.
            if len(self) - stop < max(1, self.sizing.quantum // 2):
                stop = len(self)
            ids, indices = self._store.cut(self._pos, stop, sort=self._wants_sort())
            chunk = Chunk(self._next_id, ids, indices)
            self._outstanding[chunk.chunk_id] = chunk
            self._next_id += 1
            self._pos = stop
        state.samples_out += len(chunk)
        state.chunks_out += 1
        state.last_size = len(chunk)
        if state.rate:
            state.busy_until = max(now, state.busy_until) + len(chunk) / state.rate
        return chunk

    def answered(self, worker: str, chunk: Chunk, result: ChunkResult) -> None:
        self._outstanding.pop(chunk.chunk_id, None)
        state = self._workers[worker]
        state.samples_out -= len(chunk)
        state.chunks_out -= 1
        if result.seconds > 0:
            state.done_samples = state.done_samples * 0.5 + len(chunk)
            state.done_seconds = state.done_seconds * 0.5 + result.seconds
        if state.rate:
            # It has just begun the next chunk it holds (one at a time): re-anchor the estimate.
            state.busy_until = self._clock() + state.samples_out / state.rate
        if result.started and state.last_finished is not None:
            gap = result.started - state.last_finished
            if gap > _GAP_NOISE_SECONDS and self.left() > 0:
                # The worker sat idle with work still to hand out: keep more queued on it.
                state.lead = min(self.sizing.max_lead_seconds, max(state.lead, 2 * gap))
        if result.finished:
            state.last_finished = result.finished

    def lost(self, worker: str, chunk: Chunk) -> None:
        state = self._workers[worker]
        state.alive = False
        state.samples_out -= len(chunk)
        state.chunks_out -= 1
        self._requeued.appendleft(chunk)

    def left(self) -> int:
        return len(self) - self._pos + sum(len(c) for c in self._requeued)

    def exhausted(self) -> bool:
        return self._pos >= len(self) and not self._requeued

    def pace(self, samples: int, busy_seconds: float) -> None:
        # What the driver itself can answer per second: the cap on the whole run's rate (see _chunk_seconds).
        if busy_seconds >= _PACE_MIN_BUSY_SECONDS and samples > 0:
            self._driver_rate = samples / busy_seconds

    # -- sizing -------------------------------------------------------------------

    def _wants_sort(self) -> bool:
        """Whether a window opened now is sorted: some worker takes chunks of fewer than ``SORT_BELOW`` samples."""
        sizing = self.sizing
        if sizing.fixed is not None:
            return sizing.fixed < SORT_BELOW
        known = [state.rate for state in self._workers.values() if state.alive and state.rate]
        if not known:
            return True  # no rate known yet: the first window, for whatever kind of worker
        # Workers whose rate is not known yet do not decide (sorting a window costs the driver about 5x a
        # plain one, ~100 ns a sample): a slow one makes the windows sorted from its first answer on.
        return any(min(sizing.max_chunk, rate * sizing.target_seconds) < SORT_BELOW for rate in known)

    def lead(self, worker: str) -> float:
        """The queued time kept on ``worker`` beyond its running chunk (for reports and tests)."""
        return self._workers[worker].lead

    def _held_seconds(self, state: _Worker, now: float) -> float:
        """How long ``state``'s worker still needs for what it holds (at its rate)."""
        if state.rate:
            return max(0.0, state.busy_until - now)
        return 0.0

    def _size_for(self, state: _Worker, now: float) -> int | None:
        """Samples for ``state``'s next chunk, or None when it holds enough work."""
        sizing = self.sizing
        if sizing.fixed is not None:
            return sizing.fixed if state.chunks_out < sizing.fixed_in_flight else None
        rate = state.rate
        if rate is None:
            # Not measured yet: two probes in flight, the second larger.
            if state.chunks_out >= 2:
                return None
            probe = (sizing.first or 2 * sizing.quantum) * (4 if state.chunks_out else 1)
            fair = -(-self.left() // (2 * max(1, len(self._workers))))
            return max(1, min(probe, fair))
        held = self._held_seconds(state, now)
        seconds, time_left = self._chunk_seconds(state, rate, held, now)
        # One chunk is what this one would last: less than ``seconds`` when ``max_chunk`` caps it (a
        # worker this fast would otherwise be handed several chunks in a row, none completed meanwhile).
        seconds = min(seconds, sizing.max_chunk / rate)
        if state.chunks_out >= 2 and held >= seconds + state.lead:
            return None
        if state.chunks_out >= 1 and held >= time_left:
            return None  # it would finish after everyone else even without another chunk
        size = min(sizing.max_chunk, max(1, int(rate * seconds)))
        if state.last_size:
            size = min(size, max(1, int(state.last_size * sizing.growth)))
        if size >= sizing.quantum:
            size -= size % sizing.quantum
        return size

    def _chunk_seconds(self, state: _Worker, rate: float, held: float, now: float) -> tuple[float, float]:
        """(How long this worker's next chunk should last, the time left until all the work is done).

        The time left assumes every worker keeps its rate; the chunk lasts
        half of this worker's part of it (``target_seconds`` at most).
        """
        sizing = self.sizing
        alive = [w for w in self._workers.values() if w.alive]
        known = [w.rate for w in alive if w.rate]
        mean = sum(known) / len(known)
        total_rate = sum(w.rate or mean for w in alive)
        if self._driver_rate is not None:
            # Driver-bound (workers that together answer faster than the driver completes): the work
            # ends at the driver's pace, not theirs, so there is more time left than their rates say.
            # Sized by their rates alone, chunks shrank to the tail's minimum for the whole run, and
            # each chunk costs the driver's one thread a cut, a submit and a result.
            total_rate = min(total_rate, self._driver_rate)
        # Work still to do, in samples: not handed out, plus what each worker holds (at its rate).
        remaining = self.left() + sum(
            w.rate * self._held_seconds(w, now) if w.rate else w.samples_out for w in alive
        )
        time_left = remaining / total_rate
        share = time_left - held
        return min(sizing.target_seconds, max(sizing.min_seconds, share / 2)), time_left
