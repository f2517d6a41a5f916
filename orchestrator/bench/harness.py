"""The MLPerf loadgen side: one SUT and one QSL in the driver process.

Loadgen issues the single Offline query through its *fast* issue callback
(``ConstructFastSUT``: the query ids and sample indices arrive as two lists
of ints, not one Python object per sample). A long-lived thread turns them
into numpy arrays (``chunking.QueryChunks``, which cuts chunks as workers
need them), runs the dispatcher, and completes each answered chunk's samples
with ``QuerySamplesComplete`` from a pool of reused response objects
(``Completer``; always from that one thread: completing from many
short-lived threads crashed loadgen 6.0.17). The driver's cost per sample is
then close to what loadgen's Python binding itself costs
(``benchmarks/driver_scale.py`` measures it against a bare null SUT).

The run also measures the driver: its CPU seconds (from which
``driver_stats`` estimates the rate one driver can complete), its peak RSS,
and the CPU time of the completion thread (orch's own part of the cost per
sample).
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import queue
import resource
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from orchestrator.bench import driver_stats
from orchestrator.bench.chunking import QueryChunks, Sizing
from orchestrator.bench.dispatcher import Chunk, ChunkResult, DispatchReport
from orchestrator.bench.payload import decode
from orchestrator.errors import RunError

# Runs a dispatcher over the query (a ``QueryChunks``: len() is its sample count); calls on_complete per chunk.
DispatchFn = Callable[[QueryChunks, Callable[[Chunk, ChunkResult, str], None]], DispatchReport]

# Accuracy-mode answers carry 3 KiB of logits per sample; this bounds one answer to 6 MiB.
ACCURACY_MAX_CHUNK = 2048
# Responses per QuerySamplesComplete call, and reused response objects in the pool: larger calls
# measured no faster; bare loadgen in benchmarks/driver_scale.py completes the same way.
COMPLETE_BATCH = 4096


@dataclasses.dataclass
class HarnessResult:
    """What a loadgen run produced, and what the driver spent on it.

    Attributes:
        report: the dispatcher's report (None if the query never ran).
        issued: samples loadgen issued (the query's size).
        error: what failed, or None.
        loadgen_started: ``time.time()`` when loadgen's test started.
        loadgen_seconds: wall time of loadgen's test.
        cpu_seconds: CPU time of the whole driver process during the test
            (every thread: loadgen's, Ray's, the completion thread).
        completion_cpu_seconds: CPU time of the completion thread alone.
        peak_rss_bytes: the driver process's peak resident memory so far.
    """

    report: DispatchReport | None
    issued: int
    error: BaseException | None
    loadgen_started: float = 0.0
    loadgen_seconds: float = 0.0
    cpu_seconds: float = 0.0
    completion_cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0


def sizing_for(mode: str, *, chunk_size: int | None, batch_size: int) -> Sizing:
    """How the query is cut: ``--chunk-size`` fixes it, else sizes adapt to each worker."""
    if chunk_size:
        return Sizing(fixed=chunk_size)
    return Sizing(quantum=max(1, batch_size), max_chunk=ACCURACY_MAX_CHUNK if mode == "accuracy" else Sizing.max_chunk)


class Completer:
    """Completes samples with loadgen from a pool of reused response objects.

    Building a ``QuerySampleResponse`` is most of what completing a sample
    costs in Python; ``QuerySamplesComplete`` copies each response into
    loadgen before it returns, so the same ``COMPLETE_BATCH`` objects are
    filled again (id, data, size: one setter call each) for every batch. That
    halved the cost per sample of a bare null SUT (``benchmarks/driver_scale.py``
    measures the ceiling the same way).

    Only the one completion thread uses it (loadgen 6.0.17 must be completed
    from one long-lived thread anyway).
    """

    def __init__(self, lg: Any) -> None:
        self._lg = lg
        qsr = lg.QuerySampleResponse
        self._pool = [qsr(0, 0, 0) for _ in range(COMPLETE_BATCH)]
        self._set_id, self._set_data, self._set_size = qsr.id.fset, qsr.data.fset, qsr.size.fset
        self._zeroed = True  # whether data/size of every pooled response are 0

    def _zero(self) -> None:
        if not self._zeroed:
            list(map(self._set_data, self._pool, itertools.repeat(0)))
            list(map(self._set_size, self._pool, itertools.repeat(0)))
            self._zeroed = True

    def empty(self, ids: Sequence[int]) -> None:
        """Complete ``ids`` with no response data (performance mode; the rest of a failed run)."""
        self._zero()
        pool = self._pool
        for first in range(0, len(ids), COMPLETE_BATCH):
            part = ids[first : first + COMPLETE_BATCH]
            list(map(self._set_id, pool, part))
            self._lg.QuerySamplesComplete(pool if len(part) == COMPLETE_BATCH else pool[: len(part)])

    def with_data(self, ids: Sequence[int], data: np.ndarray) -> None:
        """Complete ``ids`` with one row of the C-contiguous ``data`` each (kept alive by the caller)."""
        stride, base = data.strides[0], data.ctypes.data
        pool = self._pool
        self._zeroed = False
        list(map(self._set_size, pool, itertools.repeat(stride)))
        for first in range(0, len(ids), COMPLETE_BATCH):
            part = ids[first : first + COMPLETE_BATCH]
            list(map(self._set_id, pool, part))
            list(map(self._set_data, pool, range(base + first * stride, base + (first + len(part)) * stride, stride)))
            self._lg.QuerySamplesComplete(pool if len(part) == COMPLETE_BATCH else pool[: len(part)])


def complete_chunk(completer: Completer, mode: str, chunk: Chunk, answer: ChunkResult, worker: str) -> None:
    """Complete one answered chunk's samples with loadgen.

    Performance mode: the answer is a sample count (or an encoded array, one
    row per sample); accuracy mode: an encoded (n, 384, 2) float32 array,
    whose rows loadgen copies into its accuracy log during the call.

    Raises:
        RunError: the answer does not match the chunk.
    """
    ids = chunk.query_ids if isinstance(chunk.query_ids, (list, tuple)) else np.asarray(chunk.query_ids).tolist()
    n = len(ids)
    payload = answer.payload
    if mode == "accuracy":
        data = np.ascontiguousarray(decode(payload), dtype=np.float32)
        if data.shape != (n, 384, 2):
            raise RunError(f"worker {worker} returned logits of shape {data.shape} for {n} samples")
        completer.with_data(ids, data)
        del data  # the buffer had to live until QuerySamplesComplete returned
        return
    count = payload if isinstance(payload, int) else len(decode(payload))
    if count != n:
        raise RunError(f"worker {worker} answered {count} samples for a chunk of {n}")
    completer.empty(ids)


def run_loadgen(
    *,
    run_dir: Path,
    user_conf: Path,
    mode: str,
    sample_count: int,
    lengths: np.ndarray,
    chunk_size: int | None,
    dispatch: DispatchFn,
    batch_size: int = 1,
    stop: threading.Event | None = None,
    log_all_responses: bool = False,
) -> HarnessResult:
    """Run one loadgen test (Offline) and return once loadgen has written its logs.

    Args:
        run_dir: where loadgen writes mlperf_log_*.
        user_conf: the user.conf, read once with ``FromConfig``.
        mode: "performance" or "accuracy".
        sample_count: QSL size (samples 0..count-1 of the feature set); the
            query may be larger (samples repeat).
        lengths: real length of each QSL sample.
        chunk_size: samples per chunk, or None to size chunks for each worker.
        dispatch: runs the query (see ``DispatchFn``); it must stop handing
            out chunks when ``stop`` is set.
        batch_size: the workers' batch size (adapted chunks are multiples of it).
        stop: set on Ctrl-C / SIGTERM (by this function) or by the caller.
        log_all_responses: a test fault (``Faults.log_all_responses``): loadgen logs
            every completed sample of a performance run in mlperf_log_accuracy.json,
            so a test can check from loadgen's own log that each was completed once.

    Raises:
        KeyboardInterrupt (or orch's SIGTERM exception): the run was stopped;
            loadgen was let finish its query first (its logs are written).
    """
    import mlperf_loadgen as lg

    work: queue.Queue = queue.Queue()
    result = HarnessResult(report=None, issued=0, error=None)
    sizing = sizing_for(mode, chunk_size=chunk_size, batch_size=batch_size)

    def completion_thread() -> None:
        cpu_start = time.thread_time()
        try:
            # In a box, so that no frame but the query's own keeps loadgen's lists alive.
            box = [work.get()]
            if box[0] is not None:
                _run_query(lg, mode, box, lengths, sizing, sample_count, dispatch, result)
        finally:
            gc.unfreeze()
            result.completion_cpu_seconds = time.thread_time() - cpu_start

    def issue_queries(query_ids: list[int], sample_indices: list[int]) -> None:
        # Offline: one query, the whole run. Only the two lists travel; the arrays are made in the completion thread.
        # Out of the garbage collector's reach until the query is done: the next collection would walk
        # every item of both lists (2 x 4 million items: one collection measured 70 ms, 2% of the run).
        gc.freeze()
        result.issued += len(query_ids)
        work.put((query_ids, sample_indices))

    def flush_queries() -> None:
        pass

    thread = threading.Thread(target=completion_thread, name="orch-completions", daemon=True)
    thread.start()
    sut = lg.ConstructFastSUT(issue_queries, flush_queries)
    qsl = lg.ConstructQSL(sample_count, sample_count, lambda _: None, lambda _: None)
    try:
        settings = lg.TestSettings()
        settings.FromConfig(str(user_conf), "bert", "Offline")
        settings.scenario = lg.TestScenario.Offline
        settings.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
        if mode == "performance" and log_all_responses:
            settings.accuracy_log_probability = 1.0
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(run_dir)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False
        before = resource.getrusage(resource.RUSAGE_SELF)
        result.loadgen_started = time.time()
        started = time.perf_counter()
        try:
            _start_test_interruptibly(lg, sut, qsl, settings, log_settings, stop)
        finally:
            after = resource.getrusage(resource.RUSAGE_SELF)
            result.loadgen_seconds = time.perf_counter() - started
            result.cpu_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
            result.peak_rss_bytes = driver_stats.peak_rss_bytes()  # not ru_maxrss: see there
    finally:
        work.put(None)
        thread.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return result


def _run_query(lg, mode, box: list, lengths, sizing, sample_count, dispatch, result: HarnessResult) -> None:
    """The completion thread's work: the query's arrays, the dispatch, and every completion."""
    query_ids, sample_indices = box.pop()
    query = QueryChunks(query_ids, sample_indices, lengths, (), sizing, qsl_size=sample_count)
    completer = Completer(lg)
    # Only the query holds loadgen's lists now; it drops them once it has converted them all.
    del query_ids, sample_indices
    answered: set[int] = set()

    def on_complete(chunk: Chunk, answer: ChunkResult, worker: str) -> None:
        complete_chunk(completer, mode, chunk, answer, worker)
        answered.add(chunk.chunk_id)

    try:
        result.report = dispatch(query, on_complete)
    except BaseException as exc:  # noqa: BLE001 - reported by the caller
        result.error = exc
        # Loadgen waits for every sample: answer the rest empty so it can
        # finish writing its logs; the run is then marked failed.
        rest = query.ids_except(answered)
        if rest:
            completer.empty(rest)


def _start_test_interruptibly(lg, sut, qsl, settings, log_settings, stop: threading.Event | None) -> None:
    """Run loadgen's test in a thread, so Ctrl-C / SIGTERM reach this (main) thread.

    Python runs signal handlers in the main thread only, between bytecodes: a
    main thread blocked inside ``StartTest`` would ignore Ctrl-C until the
    query ends. Here the main thread waits in short joins; on an interrupt it
    sets ``stop`` (no more chunks are handed out; the completion thread
    answers the rest empty, so loadgen finishes its query and returns), waits
    for loadgen to return, then re-raises the interrupt.
    """
    done = threading.Event()

    def body() -> None:
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        finally:
            done.set()

    runner = threading.Thread(target=body, name="orch-loadgen", daemon=True)
    runner.start()
    interrupt: BaseException | None = None
    while not done.is_set():
        try:
            done.wait(0.2)
        except BaseException as exc:  # KeyboardInterrupt, or orch's SIGTERM exception
            if interrupt is not None:
                raise  # a second interrupt: stop waiting for loadgen
            interrupt = exc
            if stop is not None:
                stop.set()
    runner.join()
    if interrupt is not None:
        raise interrupt
