"""The pull dispatcher with fake workers that answer out of order, slowly, or die."""

from __future__ import annotations

import collections
import random
import threading
import time

import numpy as np
import pytest

from orchestrator.bench.dispatcher import Chunk, ChunkResult, Dispatcher, DispatchStopped, WorkerLost, make_chunks
from orchestrator.errors import RunError


class FakeExecutor:
    """Workers as threads with per-worker speed; a worker can be told to die."""

    def __init__(self, speeds: dict[str, float], *, die_after: dict[str, int] | None = None, seed: int = 0):
        self.speeds = speeds
        self.die_after = die_after or {}
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.finished: dict[int, tuple[str, Chunk, ChunkResult | None]] = {}
        self.submitted: list[tuple[str, int]] = []
        self.started = collections.Counter()
        self.dead: set[str] = set()
        self.next_handle = 0

    def submit(self, worker, chunk):
        with self.lock:
            handle = self.next_handle
            self.next_handle += 1
            self.submitted.append((worker, chunk.chunk_id))
            self.started[worker] += 1
            nth = self.started[worker]
        delay = self.speeds[worker] * len(chunk) * self.rng.uniform(0.5, 1.5)
        dies = worker in self.die_after and nth > self.die_after[worker]

        def work():
            time.sleep(delay)
            with self.cond:
                if dies or worker in self.dead:
                    self.dead.add(worker)
                    self.finished[handle] = (worker, chunk, None)
                else:
                    payload = [s * 10 for s in chunk.sample_indices]
                    self.finished[handle] = (worker, chunk, ChunkResult(chunk.chunk_id, payload, delay))
                self.cond.notify_all()

        threading.Thread(target=work, daemon=True).start()
        return handle

    def wait(self, handles, timeout):
        with self.cond:
            self.cond.wait_for(lambda: any(h in self.finished for h in handles), timeout=timeout)
            ready = [h for h in handles if h in self.finished]
        # Hand them back shuffled: completion order is not submission order.
        self.rng.shuffle(ready)
        return ready

    def result(self, handle):
        worker, chunk, result = self.finished[handle]
        if result is None:
            raise WorkerLost(f"{worker} died")
        return result


def _chunks(n_samples: int, chunk_size: int) -> list[Chunk]:
    lengths = np.random.default_rng(1).integers(20, 384, n_samples)
    query_ids = [1000 + i for i in range(n_samples)]
    return make_chunks(query_ids, list(range(n_samples)), lengths, chunk_size)


def _run(executor, workers, chunks, **kw):
    answered = collections.Counter()
    answers = {}
    order = []

    def on_complete(chunk, result, worker):
        order.append(chunk.chunk_id)
        for q, s, p in zip(chunk.query_ids, chunk.sample_indices, result.payload):
            answered[q] += 1
            answers[q] = (s, p)

    report = Dispatcher(executor, workers, on_complete=on_complete, poll_seconds=0.05, **kw).run(chunks)
    return report, answered, answers, order


def test_make_chunks_sorts_by_length_and_keeps_query_ids():
    lengths = np.array([10, 300, 50, 384, 120])
    chunks = make_chunks([7, 8, 9, 10, 11], [0, 1, 2, 3, 4], lengths, 2)
    assert [c.sample_indices for c in chunks] == [(3, 1), (4, 2), (0,)]
    assert [c.query_ids for c in chunks] == [(10, 8), (11, 9), (7,)]
    with pytest.raises(ValueError):
        make_chunks([1], [0], lengths, 0)


def test_every_sample_answered_once_with_its_own_query_id():
    chunks = _chunks(200, 7)
    executor = FakeExecutor({"a": 0.0005, "b": 0.0005, "c": 0.0005})
    report, answered, answers, order = _run(executor, ["a", "b", "c"], chunks)
    assert len(answered) == 200 and set(answered.values()) == {1}
    # The payload came back with its own query id, whatever the arrival order.
    assert all(p == s * 10 and q == 1000 + s for q, (s, p) in answers.items())
    assert order != sorted(order)  # completion order really differed from submission order
    assert sum(w.samples for w in report.workers.values()) == 200
    assert report.lost_workers == [] and report.rerun_samples == 0


def test_faster_worker_pulls_more_chunks_and_in_flight_is_bounded():
    chunks = _chunks(300, 5)
    executor = FakeExecutor({"fast": 0.0002, "slow": 0.002})
    in_flight = collections.Counter()
    most = collections.Counter()
    real_submit, real_result = executor.submit, executor.result
    owner = {}

    def submit(worker, chunk):
        handle = real_submit(worker, chunk)
        owner[handle] = worker
        in_flight[worker] += 1
        most[worker] = max(most[worker], in_flight[worker])
        return handle

    def result(handle):
        in_flight[owner[handle]] -= 1
        return real_result(handle)

    executor.submit, executor.result = submit, result
    report, answered, _, _ = _run(executor, ["fast", "slow"], chunks, in_flight=2)
    assert report.workers["fast"].chunks > 2 * report.workers["slow"].chunks
    assert len(answered) == 300
    # Never more than in_flight chunks queued on a worker, and the bound was reached.
    assert max(most.values()) == 2 and set(most) == {"fast", "slow"}


def test_lost_worker_chunks_are_rerun_by_the_others():
    chunks = _chunks(150, 5)
    executor = FakeExecutor({"a": 0.0005, "b": 0.0005, "c": 0.0005}, die_after={"b": 2})
    lost_calls = []
    report, answered, answers, _ = _run(
        executor, ["a", "b", "c"], chunks, on_worker_lost=lambda w, r, c: lost_calls.append((w, c))
    )
    assert len(answered) == 150 and set(answered.values()) == {1}
    assert report.lost_workers == ["b"]
    assert report.rerun_samples > 0
    assert report.rerun_samples == sum(len(c) for _, cs in lost_calls for c in cs)
    assert report.workers["b"].samples <= 2 * 5  # it died before its third chunk
    assert not report.workers["b"].alive


def test_all_workers_lost_is_an_error_not_a_hang():
    chunks = _chunks(40, 5)
    executor = FakeExecutor({"a": 0.0005, "b": 0.0005}, die_after={"a": 1, "b": 1})
    with pytest.raises(RunError, match="every worker was lost"):
        _run(executor, ["a", "b"], chunks)


def test_no_workers_refused():
    with pytest.raises(RunError):
        Dispatcher(FakeExecutor({}), [], on_complete=lambda *a: None)


def test_on_submit_sees_every_hand_out_including_reruns():
    chunks = _chunks(60, 5)
    executor = FakeExecutor({"a": 0.0005, "b": 0.0005}, die_after={"b": 1})
    handed = []
    report, answered, _, _ = _run(executor, ["a", "b"], chunks, on_submit=lambda c, w: handed.append((w, c.chunk_id)))
    assert handed == executor.submitted
    assert len(handed) > len(chunks)  # the lost worker's chunks were handed out again
    assert len(answered) == 60


def test_stop_hands_out_nothing_more_and_raises():
    chunks = _chunks(400, 4)
    executor = FakeExecutor({"a": 0.002, "b": 0.002})
    stop = threading.Event()
    seen = []

    def on_complete(chunk, result, worker):
        seen.append(chunk.chunk_id)
        if len(seen) == 3:
            stop.set()

    dispatcher = Dispatcher(executor, ["a", "b"], on_complete=on_complete, stop=stop, poll_seconds=0.05)
    with pytest.raises(DispatchStopped, match="not yet answered"):
        dispatcher.run(chunks)
    submitted_at_stop = len(executor.submitted)
    time.sleep(0.1)
    assert len(executor.submitted) == submitted_at_stop < len(chunks)


def test_stop_set_before_run_hands_out_nothing():
    stop = threading.Event()
    stop.set()
    executor = FakeExecutor({"a": 0.001})
    with pytest.raises(DispatchStopped):
        Dispatcher(executor, ["a"], on_complete=lambda *a: None, stop=stop).run(_chunks(10, 2))
    assert executor.submitted == []


class InstantExecutor:
    """Every chunk is answered the moment it is handed out; records submits, waits and completions in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.chunks: dict[int, Chunk] = {}

    def submit(self, worker, chunk):
        self.events.append(("submit", chunk.chunk_id))
        self.chunks[chunk.chunk_id] = chunk
        return chunk.chunk_id

    def wait(self, handles, timeout):
        self.events.append(("wait", timeout))
        return list(handles)

    def result(self, handle):
        return ChunkResult(handle, len(self.chunks[handle]), 0.001)


def test_answers_are_handled_between_hand_outs_not_after_a_run_of_them():
    # Each worker keeps 4 chunks queued: before, the dispatcher handed out all 8 before it handled any answer.
    from orchestrator.bench.chunking import FixedChunks

    chunks = make_chunks(list(range(64)), list(range(64)), np.full(64, 100), 4)
    executor = InstantExecutor()
    done = []
    Dispatcher(executor, ["a", "b"], on_complete=lambda c, r, w: (done.append(c.chunk_id), executor.events.append(("done", c.chunk_id))),
               poll_seconds=0.5).run(FixedChunks(chunks, in_flight=4))  # fmt: skip
    assert sorted(done) == list(range(16))
    kinds = [e[0] for e in executor.events]
    # One pass (a chunk per worker), then the answers ready by then, then the next pass.
    assert kinds[:2] == ["submit", "submit"] and kinds[2] == "wait" and kinds[3:5] == ["done", "done"]
    # A wait right after a pass that handed something out does not block.
    for before, event in zip(executor.events, executor.events[1:]):
        if event[0] == "wait" and before[0] == "submit":
            assert event[1] == 0.0
