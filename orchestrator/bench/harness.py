"""The MLPerf loadgen side: one SUT and one QSL in the driver process.

Loadgen issues the single Offline query; a long-lived thread turns it into
chunks, hands them to the dispatcher, and completes each chunk's samples with
``QuerySamplesComplete`` as answers arrive (always from that one thread:
completing from many short-lived threads crashed loadgen 6.0.17).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from orchestrator.bench.dispatcher import Chunk, ChunkResult, DispatchReport, make_chunks
from orchestrator.bench.payload import decode
from orchestrator.errors import RunError

# Builds and runs a dispatcher over the given chunks; calls on_complete per chunk.
DispatchFn = Callable[[list[Chunk], Callable[[Chunk, ChunkResult, str], None]], DispatchReport]


@dataclasses.dataclass
class HarnessResult:
    """What a loadgen run produced."""

    report: DispatchReport | None
    issued: int
    error: BaseException | None


def run_loadgen(
    *,
    run_dir: Path,
    user_conf: Path,
    mode: str,
    sample_count: int,
    lengths: np.ndarray,
    chunk_size: int,
    dispatch: DispatchFn,
    stop: threading.Event | None = None,
) -> HarnessResult:
    """Run one loadgen test (Offline) and return once loadgen has written its logs.

    Args:
        run_dir: where loadgen writes mlperf_log_*.
        user_conf: the user.conf, read once with ``FromConfig``.
        mode: "performance" or "accuracy".
        sample_count: QSL size (samples 0..count-1 of the feature set).
        lengths: real length of each QSL sample.
        chunk_size: samples per chunk.
        dispatch: runs the chunks (see ``DispatchFn``); it must stop handing
            out chunks when ``stop`` is set.
        stop: set on Ctrl-C / SIGTERM (by this function) or by the caller.

    Raises:
        KeyboardInterrupt or ``Interrupted``: the run was stopped; loadgen was
            let finish its query first (its logs are written), so the caller can
            keep them in the failed run directory.
    """
    import mlperf_loadgen as lg

    work: queue.Queue = queue.Queue()
    result = HarnessResult(report=None, issued=0, error=None)

    def complete_chunk(chunk: Chunk, answer: ChunkResult, worker: str) -> None:
        payload = decode(answer.payload)
        if len(payload) != len(chunk):
            raise RunError(f"worker {worker} answered {len(payload)} samples for a chunk of {len(chunk)}")
        responses = []
        buffers = []  # keep every buffer alive until QuerySamplesComplete returns
        if mode == "accuracy":
            data = np.ascontiguousarray(payload, dtype=np.float32)
            if data.shape != (len(chunk), 384, 2):
                raise RunError(f"worker {worker} returned logits of shape {data.shape} for {len(chunk)} samples")
            for row, query_id in enumerate(chunk.query_ids):
                one = data[row]
                buffers.append(one)
                responses.append(lg.QuerySampleResponse(query_id, one.ctypes.data, one.nbytes))
        else:
            for query_id in chunk.query_ids:
                responses.append(lg.QuerySampleResponse(query_id, 0, 0))
        lg.QuerySamplesComplete(responses)
        del buffers

    def completion_thread() -> None:
        samples = work.get()
        if samples is None:
            return
        query_ids = [s.id for s in samples]
        indices = [s.index for s in samples]
        chunks = make_chunks(query_ids, indices, lengths, chunk_size)
        answered: set[int] = set()

        def on_complete(chunk: Chunk, answer: ChunkResult, worker: str) -> None:
            complete_chunk(chunk, answer, worker)
            answered.add(chunk.chunk_id)

        try:
            result.report = dispatch(chunks, on_complete)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            result.error = exc
            # Loadgen waits for every sample: answer the rest empty so it can
            # finish writing its logs; the run is then marked failed.
            rest = [lg.QuerySampleResponse(q, 0, 0) for c in chunks if c.chunk_id not in answered for q in c.query_ids]
            if rest:
                lg.QuerySamplesComplete(rest)

    def issue_queries(samples) -> None:
        result.issued += len(samples)
        work.put(list(samples))

    def flush_queries() -> None:
        pass

    thread = threading.Thread(target=completion_thread, name="orch-completions", daemon=True)
    thread.start()
    sut = lg.ConstructSUT(issue_queries, flush_queries)
    qsl = lg.ConstructQSL(sample_count, sample_count, lambda _: None, lambda _: None)
    try:
        settings = lg.TestSettings()
        settings.FromConfig(str(user_conf), "bert", "Offline")
        settings.scenario = lg.TestScenario.Offline
        settings.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(run_dir)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.enable_trace = False
        _start_test_interruptibly(lg, sut, qsl, settings, log_settings, stop)
    finally:
        work.put(None)
        thread.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return result


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
