"""timeline.jsonl: written as the run goes, read back whole, a killed writer's cut line tolerated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from orchestrator.bench.dispatcher import Chunk, ChunkResult, Dispatcher, WorkerLost, make_chunks
from orchestrator.bench.timeline import TIMELINE_FILE, TimelineError, TimelineRecorder, read_timeline

WORKERS = [
    {"name": "w1", "node": "n1", "backend": "onnxruntime", "threads": 2, "cpus": 2.0, "gpus": 0.0, "host": "h1"},
    {"name": "w2", "node": "n2", "backend": "onnxruntime", "threads": 4, "cpus": 4.0, "gpus": 0.0, "host": "h2"},
]


def _result(chunk: Chunk, seconds: float = 0.01) -> ChunkResult:
    now = time.time()
    return ChunkResult(chunk.chunk_id, None, seconds, started=now - seconds, finished=now)


def test_round_trip_of_every_event(tmp_path):
    lengths = np.array([100, 50, 384, 7, 20, 300])
    rec = TimelineRecorder(tmp_path / TIMELINE_FILE, workers=WORKERS, lengths=lengths, mode="accuracy", count=6)
    a, b, c = Chunk(0, (10, 11), (2, 0)), Chunk(1, (12, 13), (5, 1)), Chunk(2, (14, 15), (4, 3))
    rec.loadgen_started()
    rec.query_issued(sum(len(x) for x in (a, b, c)))
    rec.submitted(a, "w1")
    rec.submitted(b, "w2")
    rec.submitted(c, "w2")
    rec.completed(a, _result(a), "w1")
    rec.worker_lost("w2", "actor died", [b])
    rec.worker_lost("w2", "actor died", [c])
    rec.submitted(b, "w1")
    rec.completed(b, _result(b), "w1")
    rec.submitted(c, "w1")
    rec.completed(c, ChunkResult(2, None, 0.5), "w1")  # no worker clock: start/end unknown
    rec.loadgen_finished()
    rec.close()
    rec.close()  # twice is harmless

    line = read_timeline(tmp_path / TIMELINE_FILE)
    assert line.header["mode"] == "accuracy" and line.header["count"] == 6 and line.header["version"] == 1
    assert [w.name for w in line.workers] == ["w1", "w2"] and line.node_of("w2") == "n2" and line.workers[1].cpus == 4.0
    assert [c.chunk for c in line.chunks] == [0, 1, 2]
    first, again, unknown = line.chunks
    assert (first.worker, first.samples, first.len_min, first.len_mean, first.len_max) == ("w1", 2, 100, 242.0, 384)
    assert not first.rerun and again.rerun and unknown.rerun
    assert (again.len_min, again.len_max) == (50, 300)
    assert first.start is not None and first.start <= first.end <= first.back + 1e-3
    assert first.submitted is not None and first.submitted <= first.back
    assert unknown.start is None and unknown.end is None and unknown.busy == 0.5
    # The two in-flight chunks of w2 make one loss that requeued both.
    assert [(x.worker, x.reason, x.requeued) for x in line.losses] == [("w2", "actor died", (1, 2))]
    assert [(h.chunk, h.worker, h.rerun) for h in line.handouts] == [
        (0, "w1", False), (1, "w2", False), (2, "w2", False), (1, "w1", True), (2, "w1", True)
    ]
    assert line.loadgen_start <= line.query <= line.loadgen_end and line.query_samples == 6
    assert line.ended["ok"] is True and line.ok is True and not line.truncated
    assert abs(line.t0 - time.time()) < 60


def test_close_with_an_error_says_so(tmp_path):
    rec = TimelineRecorder(tmp_path / TIMELINE_FILE, workers=WORKERS, lengths=np.zeros(1))
    rec.close(error=RuntimeError("every worker was lost"))
    line = read_timeline(tmp_path / TIMELINE_FILE)
    assert line.ok is False and line.ended["error"] == "every worker was lost"


def test_a_cut_short_last_line_is_skipped_and_flagged(tmp_path):
    path = tmp_path / TIMELINE_FILE
    rec = TimelineRecorder(path, workers=WORKERS, lengths=np.array([5, 6]))
    chunk = Chunk(0, (1, 2), (0, 1))
    rec.submitted(chunk, "w1")
    rec.completed(chunk, _result(chunk), "w1")
    rec._file.flush()
    with open(path, "a") as f:
        f.write('{"e":"done","t":1.2,"c":1,"w":"w')  # the writer died mid-line
    line = read_timeline(path)
    assert line.truncated and [c.chunk for c in line.chunks] == [0] and line.ended is None and line.ok is None


KILLED_WRITER = """
import os, signal, sys, time
import numpy as np
from orchestrator.bench.dispatcher import Chunk, ChunkResult
from orchestrator.bench.timeline import TimelineRecorder
rec = TimelineRecorder(sys.argv[1], workers=[{"name": "w1", "node": "n1"}], lengths=np.arange(100))
for i in range(20):
    c = Chunk(i, (i,), (i,))
    rec.submitted(c, "w1")
    rec.completed(c, ChunkResult(i, None, 0.001, started=time.time(), finished=time.time()), "w1")
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no flush at exit: like a killed driver
"""


def test_a_killed_driver_leaves_every_record_it_wrote(tmp_path):
    path = tmp_path / TIMELINE_FILE
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    line = read_timeline(path)
    assert [c.chunk for c in line.chunks] == list(range(20)) and line.ended is None


def test_a_broken_line_inside_the_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / TIMELINE_FILE
    rec = TimelineRecorder(path, workers=WORKERS, lengths=np.zeros(1))
    rec.close()
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(TimelineError, match=rf"{TIMELINE_FILE}:2: not a JSON record"):
        read_timeline(path)


def test_not_a_timeline_and_a_newer_version_are_refused(tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    with pytest.raises(TimelineError, match="is not an orch timeline"):
        read_timeline(other)
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format": "orch-timeline", "version": 99, "t0": 0}) + "\n")
    with pytest.raises(TimelineError, match="format version 99"):
        read_timeline(newer)
    with pytest.raises(TimelineError, match="cannot read"):
        read_timeline(tmp_path / "absent.jsonl")


def test_a_failed_write_stops_recording_with_one_warning(tmp_path, capsys):
    rec = TimelineRecorder(tmp_path / TIMELINE_FILE, workers=WORKERS, lengths=np.zeros(2))
    rec._file.close()  # what a full disk or a vanished folder looks like to the writer
    chunk = Chunk(0, (1,), (0,))
    rec.submitted(chunk, "w1")
    rec.submitted(chunk, "w1")
    rec.close()
    assert capsys.readouterr().err.count("stopped recording") == 1


class _Executor:
    """Synchronous fake workers with wall-clock times; ``dies`` loses its worker at its 2nd chunk."""

    def __init__(self, dies: str):
        self.dies = dies
        self.results = {}
        self.count = {}

    def submit(self, worker, chunk):
        self.count[worker] = self.count.get(worker, 0) + 1
        handle = len(self.results)
        lost = worker == self.dies and self.count[worker] >= 2
        self.results[handle] = None if lost else _result(chunk, 0.001)
        return handle

    def wait(self, handles, timeout):
        return list(handles)[:1]

    def result(self, handle):
        if self.results[handle] is None:
            raise WorkerLost("gone")
        return self.results[handle]


def test_wired_to_a_real_dispatcher_it_records_losses_and_reruns(tmp_path):
    lengths = np.random.default_rng(0).integers(10, 384, 40)
    chunks = make_chunks(list(range(40)), list(range(40)), lengths, 4)
    rec = TimelineRecorder(tmp_path / TIMELINE_FILE, workers=WORKERS, lengths=lengths)
    rec.query_issued(sum(len(c) for c in chunks))

    def done(chunk, result, worker):
        rec.completed(chunk, result, worker)

    Dispatcher(_Executor(dies="w2"), ["w1", "w2"], on_complete=done, on_submit=rec.submitted,
               on_worker_lost=rec.worker_lost, poll_seconds=0.01).run(chunks)
    rec.close()
    line = read_timeline(tmp_path / TIMELINE_FILE)
    assert sorted(c.chunk for c in line.chunks) == list(range(10))  # every chunk answered once
    assert sum(c.samples for c in line.chunks) == 40
    assert [loss.worker for loss in line.losses] == ["w2"]
    reruns = [c for c in line.chunks if c.rerun]
    assert reruns and {c.worker for c in reruns} == {"w1"}
    assert {c.chunk for c in reruns} == set(line.losses[0].requeued)
    for c in line.chunks:  # the recorded lengths are the chunk's own samples'
        mine = lengths[np.asarray(chunks[c.chunk].sample_indices)]
        assert (c.len_min, c.len_max, c.len_mean) == (mine.min(), mine.max(), round(float(mine.mean()), 1))


def test_for_run_describes_the_workers_from_the_slots(tmp_path):
    from orchestrator.bench.cluster import Slot

    slots = [Slot("node1-gpu0", "node1", "id1", 8.0, 8, backend="onnxruntime-cuda", num_gpus=1.0),
             Slot("node2", "node2", "id2", 16.0, 16)]
    rec = TimelineRecorder.for_run(tmp_path, slots=slots, infos={"node2": {"hostname": "box2"}}, backend="onnxruntime",
                                   lengths=np.zeros(1), mode="performance")
    rec.close()
    header = read_timeline(tmp_path / TIMELINE_FILE).header
    assert header["workers"] == [
        {"name": "node1-gpu0", "node": "node1", "backend": "onnxruntime-cuda", "threads": 8, "cpus": 8.0, "gpus": 1.0, "host": None},
        {"name": "node2", "node": "node2", "backend": "onnxruntime", "threads": 16, "cpus": 16.0, "gpus": 0.0, "host": "box2"},
    ]
    assert header["mode"] == "performance" and os.path.basename(rec.path) == TIMELINE_FILE
