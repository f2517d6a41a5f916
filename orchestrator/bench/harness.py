"""The MLPerf loadgen side: one SUT and one QSL in the driver process.

Loadgen issues the single Offline query; a long-lived thread turns it into
chunks, hands them to the dispatcher, and completes each chunk's samples with
``QuerySamplesComplete`` as answers arrive (always from that one thread:
completing from many short-lived threads crashed loadgen 6.0.17).
"""

from __future__ import annotations

import dataclasses
import queue
import re
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
    logits: dict[int, np.ndarray]  # sample index -> (384, 2), accuracy mode only
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
    keep_logits: bool = False,
) -> HarnessResult:
    """Run one loadgen test (Offline) and return once loadgen has written its logs.

    Args:
        run_dir: where loadgen writes mlperf_log_*.
        user_conf: the user.conf, read once with ``FromConfig``.
        mode: "performance" or "accuracy".
        sample_count: QSL size (samples 0..count-1 of the feature set).
        lengths: real length of each QSL sample.
        chunk_size: samples per chunk.
        dispatch: runs the chunks (see ``DispatchFn``).
        keep_logits: also keep every answered sample's logits in memory.
    """
    import mlperf_loadgen as lg

    work: queue.Queue = queue.Queue()
    result = HarnessResult(report=None, logits={}, issued=0, error=None)

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
            for row, (query_id, sample) in enumerate(zip(chunk.query_ids, chunk.sample_indices)):
                one = data[row]
                buffers.append(one)
                responses.append(lg.QuerySampleResponse(query_id, one.ctypes.data, one.nbytes))
                if keep_logits:
                    result.logits[sample] = one
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
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        work.put(None)
        thread.join()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    return result


@dataclasses.dataclass(frozen=True)
class LoadgenSummary:
    """The facts orch reads back from ``mlperf_log_summary.txt``."""

    samples_per_second: float | None
    result_valid: bool | None
    invalid_reasons: list[str]
    errors: list[str]


_SPS = re.compile(r"^Samples per second\s*:\s*([0-9.eE+-]+)", re.M)
_RESULT = re.compile(r"^Result is\s*:\s*(VALID|INVALID)", re.M)
_UNMET = re.compile(r"^\s*(.+?)\s*:\s*NO\s*$", re.M)


def read_summary(run_dir: Path) -> LoadgenSummary:
    """Parse loadgen's summary and collect errors from its detail log."""
    summary = (run_dir / "mlperf_log_summary.txt").read_text(errors="replace")
    sps = _SPS.search(summary)
    res = _RESULT.search(summary)
    errors = []
    detail = run_dir / "mlperf_log_detail.txt"
    if detail.exists():
        for line in detail.read_text(errors="replace").splitlines():
            if '"is_error": true' in line:
                errors.append(line[:300])
    return LoadgenSummary(
        samples_per_second=float(sps.group(1)) if sps else None,
        result_valid=(res.group(1) == "VALID") if res else None,
        invalid_reasons=[m.group(1) for m in _UNMET.finditer(summary)],
        errors=errors,
    )
