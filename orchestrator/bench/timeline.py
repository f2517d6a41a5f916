"""The run's timeline: every chunk's hand-out, compute and return, written as the run goes.

``timeline.jsonl`` in the run directory is JSON lines: a header record, then
one record per event, each answer, loss and loadgen mark flushed to the
kernel at once (hand-outs go with the next answer), so a run that fails or
is killed keeps the timeline of what it did; only the line being written at
the kill can be cut short, and the reader skips it. A machine crash can lose the last lines (no fsync:
that would cost a disk flush per chunk).

Format (``version`` 1). The header::

    {"format": "orch-timeline", "version": 1, "t0": <driver epoch seconds>,
     "mode": ..., "execution": ..., "count": ..., "driver_host": ...,
     "workers": [{"name", "node", "backend", "threads", "cpus", "gpus", "host"}]}

Every event has ``e`` (its kind) and ``t``, seconds since ``t0`` on the
driver's clock::

    loadgen_start                    before loadgen's StartTest is called
    query    samples, chunks         the Offline query reached the dispatcher
    submit   c, w[, rerun]           chunk c handed to worker w (rerun: after a lost worker)
    done     c, w, start, end, busy, n, len=[min, mean, max]
                                     chunk c back at the driver; start/end: the
                                     worker's own clock (time.time() - t0 on its
                                     node; null when unknown), busy: its compute
                                     seconds, n: samples, len: their real lengths
    lost     w, reason, requeued     worker w lost; the chunks given back to the queue
    loadgen_end                      loadgen's StartTest returned
    end      ok, error               the timeline was closed (absent: the run died first)

Recording costs some 20 us per chunk of 32 samples on the dispatcher's
thread, about half the driver's own work for it, and under 10 % of it for
chunks of thousands (``benchmarks/timeline_cost.py``; figures in docs/report.md).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from orchestrator.errors import OrchError

TIMELINE_FILE = "timeline.jsonl"
FORMAT = "orch-timeline"
VERSION = 1


class TimelineError(OrchError):
    """A timeline file is not one orch can read."""


class TimelineRecorder:
    """Appends a run's events to ``timeline.jsonl``; see the module docstring.

    The dispatcher hooks (``submitted``, ``completed``, ``worker_lost``) are
    called from the dispatcher's thread, the loadgen marks from the runner's;
    a lock keeps lines whole. A write that fails (disk full) stops the
    recording with one warning on stderr: the benchmark goes on, and the
    timeline, having no ``end`` record, reads as cut short.

    Args:
        path: the file to create (its folder must exist).
        workers: one dict per worker (name, node, backend, threads, cpus, gpus, host).
        lengths: real length of every QSL sample, indexed by sample index.
        **meta: more header fields (mode, execution, count, ...).
    """

    def __init__(self, path: Path, *, workers: list[dict[str, Any]], lengths: Any, **meta: Any) -> None:
        self.path = Path(path)
        self._lengths = np.asarray(lengths)
        self._lengths_list = self._lengths.tolist()  # small chunks: list indexing beats numpy's per-call overhead
        self._lock = threading.Lock()
        self._requeued: set[int] = set()
        self._names: dict[str, str] = {}
        self._closed = False
        self.t0 = time.time()
        # "w": a run that reuses its folder (a re-run) replaces the earlier timeline, never appends to it.
        self._file = open(self.path, "w", encoding="utf-8")
        header = {"format": FORMAT, "version": VERSION, "t0": self.t0, "driver_host": socket.gethostname(), **meta}
        header["workers"] = workers
        self._write(header)

    @classmethod
    def for_run(cls, run_dir: Path, *, slots: Sequence[Any], infos: dict[str, dict[str, Any]], backend: str,
                lengths: Any, **meta: Any) -> "TimelineRecorder":
        """A recorder for a run directory, its workers described from the session's slots and worker infos."""
        workers = [
            {
                "name": s.worker,
                "node": s.node,
                "backend": s.backend or backend,
                "threads": s.threads,
                "cpus": s.num_cpus,
                "gpus": s.num_gpus,
                "host": infos.get(s.worker, {}).get("hostname"),
            }
            for s in slots
        ]
        return cls(Path(run_dir) / TIMELINE_FILE, workers=workers, lengths=lengths, **meta)

    def _now(self) -> float:
        return round(time.time() - self.t0, 6)

    def _write(self, record: dict[str, Any] | str, flush: bool = True) -> None:
        line = record if isinstance(record, str) else json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._closed:
                return
            try:
                self._file.write(line)
                if flush:
                    self._file.flush()
            except (OSError, ValueError) as exc:
                self._closed = True
                sys.stderr.write(f"orch: warning: the timeline {self.path} stopped recording: {exc}\n")

    def _event(self, kind: str, **fields: Any) -> None:
        self._write({"e": kind, "t": self._now(), **fields})

    def _name(self, worker: str) -> str:
        quoted = self._names.get(worker)
        if quoted is None:
            quoted = self._names[worker] = json.dumps(worker)
        return quoted

    def loadgen_started(self) -> None:
        """Loadgen's StartTest is about to be called."""
        self._event("loadgen_start")

    def loadgen_finished(self) -> None:
        """Loadgen's StartTest returned (or raised)."""
        self._event("loadgen_end")

    def query_issued(self, samples: int) -> None:
        """The Offline query of ``samples`` reached the dispatcher (it is cut into chunks as workers ask)."""
        self._event("query", samples=int(samples))

    # The two per-chunk records are formatted by hand (a third of json.dumps's
    # cost): every field is a number or an already-quoted worker name.

    def submitted(self, chunk: Any, worker: str) -> None:
        """Dispatcher ``on_submit`` hook.

        Not flushed on its own: it reaches the file with the next ``done`` (a
        killed driver loses at most the hand-outs since its last answer).
        """
        rerun = ',"rerun":true' if chunk.chunk_id in self._requeued else ""
        line = f'{{"e":"submit","t":{time.time() - self.t0:.6f},"c":{int(chunk.chunk_id)},"w":{self._name(worker)}{rerun}}}\n'
        self._write(line, flush=False)

    def completed(self, chunk: Any, result: Any, worker: str) -> None:
        """Dispatcher ``on_complete`` hook: the chunk's answer is back at the driver."""
        t = time.time() - self.t0
        indices = chunk.sample_indices
        n = len(indices)
        if not n:
            low, total, high = 0, 0, 0
        elif isinstance(indices, np.ndarray) or n > 512:
            lengths = self._lengths[np.asarray(indices, dtype=np.int64)]
            low, total, high = int(lengths.min()), int(lengths.sum()), int(lengths.max())
        else:
            every = self._lengths_list
            lengths = [every[i] for i in indices]
            low, total, high = min(lengths), sum(lengths), max(lengths)
        start = f"{result.started - self.t0:.6f}" if result.started else "null"
        end = f"{result.finished - self.t0:.6f}" if result.finished else "null"
        self._write(
            f'{{"e":"done","t":{t:.6f},"c":{int(chunk.chunk_id)},"w":{self._name(worker)},"start":{start},"end":{end},'
            f'"busy":{float(result.seconds):.6f},"n":{n},"len":[{low},{total / n if n else 0.0:.1f},{high}]}}\n'
        )

    def worker_lost(self, worker: str, reason: str, requeued: Iterable[Any]) -> None:
        """Dispatcher ``on_worker_lost`` hook."""
        ids = [c.chunk_id for c in requeued]
        self._requeued.update(ids)
        self._event("lost", w=worker, reason=reason, requeued=ids)

    def close(self, error: BaseException | str | None = None) -> None:
        """Write the ``end`` record and close the file; safe to call twice."""
        if self._closed:
            return
        message = None if error is None else (str(error) or type(error).__name__)
        self._event("end", ok=error is None, error=message)
        with self._lock:
            self._closed = True
            self._file.close()


# --- reading ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """One worker of the run, from the header."""

    name: str
    node: str
    backend: str | None = None
    threads: int | None = None
    cpus: float | None = None
    gpus: float | None = None
    host: str | None = None


@dataclasses.dataclass(frozen=True)
class ChunkDone:
    """One chunk answered (times in seconds since t0; start/end on the worker's clock)."""

    chunk: int
    worker: str
    submitted: float | None  # the hand-out that was answered (driver clock)
    back: float  # answer at the driver (driver clock)
    start: float | None
    end: float | None
    busy: float
    samples: int
    len_min: int
    len_mean: float
    len_max: int
    rerun: bool  # handed out again after its first worker was lost


@dataclasses.dataclass(frozen=True)
class Handout:
    """One hand-out of a chunk (driver clock)."""

    t: float
    chunk: int
    worker: str
    rerun: bool


@dataclasses.dataclass(frozen=True)
class Loss:
    """A lost worker: when the driver saw it, why, and the chunks given back."""

    worker: str
    t: float
    reason: str
    requeued: tuple[int, ...]


@dataclasses.dataclass
class Timeline:
    """A timeline file, read back.

    Attributes:
        header: the header record as written.
        workers: the run's workers, in the header's order.
        chunks: every answered chunk, in the order of their answers.
        handouts: every hand-out, re-runs included.
        losses: one per lost worker (the first time the driver saw it), in time order.
        loadgen_start, query, loadgen_end: the loadgen marks (None when absent).
        ended: the ``end`` record, or None when the run died before closing it.
        truncated: the last line was cut short (a killed run) and skipped.
    """

    header: dict[str, Any]
    workers: list[WorkerInfo]
    chunks: list[ChunkDone]
    handouts: list[Handout]
    losses: list[Loss]
    loadgen_start: float | None = None
    query: float | None = None
    query_samples: int | None = None
    query_chunks: int | None = None
    loadgen_end: float | None = None
    ended: dict[str, Any] | None = None
    truncated: bool = False

    @property
    def t0(self) -> float:
        return float(self.header["t0"])

    @property
    def ok(self) -> bool | None:
        """True/False from the end record; None when the run died before it."""
        return None if self.ended is None else bool(self.ended.get("ok"))

    def node_of(self, worker: str) -> str:
        for w in self.workers:
            if w.name == worker:
                return w.node
        return worker


def read_timeline(path: Path) -> Timeline:
    """Read a ``timeline.jsonl``, tolerating a cut-short last line.

    Raises:
        TimelineError: not an orch timeline, a newer format version, or a
            broken line other than the last one.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TimelineError(f"{path}: cannot read the timeline ({exc.strerror or exc})") from exc
    lines = text.split("\n")
    # A file ends with "\n" after every whole record; anything after the last one was cut.
    records: list[dict[str, Any]] = []
    truncated = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # the unterminated tail of a killed writer
                truncated = True
                continue
            raise TimelineError(f"{path}:{number}: not a JSON record", hint="the file was edited or damaged") from None
        if not isinstance(record, dict):
            raise TimelineError(f"{path}:{number}: not a JSON object")
        records.append(record)
    if not records or records[0].get("format") != FORMAT:
        raise TimelineError(f"{path} is not an orch timeline (no {FORMAT} header)")
    header = records[0]
    if int(header.get("version", 0)) > VERSION:
        raise TimelineError(
            f"{path} has timeline format version {header.get('version')}; this orch reads up to {VERSION}",
            hint="make the report with a newer orch",
        )
    return _build(header, records[1:], truncated)


def _build(header: dict[str, Any], events: list[dict[str, Any]], truncated: bool) -> Timeline:
    fields = {f.name for f in dataclasses.fields(WorkerInfo)}
    workers = [WorkerInfo(**{k: v for k, v in w.items() if k in fields}) for w in header.get("workers", [])]
    line = Timeline(header=header, workers=workers, chunks=[], handouts=[], losses=[], truncated=truncated)
    last_handout: dict[tuple[int, str], float] = {}
    handed: dict[int, int] = {}
    lost_seen: set[str] = set()
    for ev in events:
        kind, t = ev.get("e"), float(ev.get("t", 0.0))
        if kind == "submit":
            chunk, worker = int(ev["c"]), str(ev["w"])
            handed[chunk] = handed.get(chunk, 0) + 1
            line.handouts.append(Handout(t, chunk, worker, bool(ev.get("rerun")) or handed[chunk] > 1))
            last_handout[(chunk, worker)] = t
        elif kind == "done":
            chunk, worker = int(ev["c"]), str(ev["w"])
            low, mean, high = (ev.get("len") or [0, 0.0, 0])[:3]
            line.chunks.append(ChunkDone(
                chunk=chunk, worker=worker, submitted=last_handout.get((chunk, worker)), back=t,
                start=_opt(ev.get("start")), end=_opt(ev.get("end")), busy=float(ev.get("busy") or 0.0),
                samples=int(ev.get("n") or 0), len_min=int(low), len_mean=float(mean), len_max=int(high),
                rerun=handed.get(chunk, 0) > 1,
            ))  # fmt: skip
        elif kind == "lost":
            worker = str(ev["w"])
            if worker not in lost_seen:
                lost_seen.add(worker)
                line.losses.append(Loss(worker, t, str(ev.get("reason") or ""), tuple(ev.get("requeued") or ())))
            else:  # later in-flight chunks of the same worker
                first = next(i for i, loss in enumerate(line.losses) if loss.worker == worker)
                old = line.losses[first]
                line.losses[first] = dataclasses.replace(old, requeued=old.requeued + tuple(ev.get("requeued") or ()))
        elif kind == "loadgen_start":
            line.loadgen_start = t
        elif kind == "query":
            line.query, line.query_samples, line.query_chunks = t, ev.get("samples"), ev.get("chunks")
        elif kind == "loadgen_end":
            line.loadgen_end = t
        elif kind == "end":
            line.ended = {"t": t, "ok": bool(ev.get("ok")), "error": ev.get("error")}
        # Unknown kinds (a newer minor addition) are skipped on purpose.
    return line


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)
