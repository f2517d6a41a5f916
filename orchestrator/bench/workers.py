"""Ray actors that run chunks, and the executor the dispatcher drives them with.

Only sample indices travel to an actor: it loads the features from its own
node's copy (the feature cache keyed by dataset + vocab). Only logits
(accuracy mode) or two small integers per sample (performance mode) travel
back.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np

from orchestrator.bench.dispatcher import Chunk, ChunkResult, WorkerLost
from orchestrator.bench.payload import encode


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """How to build one worker (all paths are paths on the worker's node)."""

    name: str  # unique worker name
    node: str  # the node it runs on
    backend: str
    model_path: str
    dataset_path: str
    vocab_path: str
    threads: int | None
    batch_size: int
    num_cpus: float
    precision: str = "fp32"  # the worker builds (or finds in its node's cache) this variant of model_path
    num_gpus: float = 0.0
    node_id: str | None = None  # Ray node to pin the actor to (None: anywhere)
    kill_after_chunks: int | None = None  # test hook: SIGKILL itself before chunk N+1
    chunk_delay: float = 0.0  # test hook: seconds of sleep per chunk, to make a run last


class InferenceWorker:
    """The actor body (wrapped with ``ray.remote`` by ``start_workers``)."""

    def __init__(self, spec: WorkerSpec) -> None:
        from orchestrator.backends import get_backend
        from orchestrator.squad.library import load_features

        self.spec = spec
        features = load_features(Path(spec.dataset_path), Path(spec.vocab_path))
        self.input_ids = features.input_ids
        self.input_mask = features.input_mask
        self.segment_ids = features.segment_ids
        self.lengths = features.lengths
        self.cache_key = features.cache_key
        self.backend = get_backend(spec.backend)
        if getattr(self.backend, "eager", False) is None and os.environ.get("ORCH_DEEPSPARSE_EAGER") is None:
            # Compile every engine now, before loadgen's clock starts, so a
            # performance run does not time the compilation.
            self.backend.eager = True
        model_path = Path(spec.model_path)
        if spec.precision != "fp32":
            from orchestrator.models.precision import prepare_variant

            model_path = prepare_variant(model_path, spec.precision, features=features).path
        self.model_path = model_path
        self.backend.load(model_path, threads=spec.threads, batch_size=spec.batch_size)
        self.chunks_done = 0

    def info(self) -> dict[str, Any]:
        """Where this worker runs and what it runs on."""
        from orchestrator.facts import collect_facts

        import ray

        return {
            "name": self.spec.name,
            "node": self.spec.node,
            "backend": self.spec.backend,
            "hostname": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "samples_available": int(len(self.lengths)),
            "features_key": self.cache_key,
            "device": self.backend.device_info(),
            "facts": collect_facts(),
        }

    def infer(self, chunk_id: int, sample_indices: Sequence[int], return_logits: bool) -> ChunkResult:
        """Run one chunk; logits (n, 384, 2) float32 or (n, 2) best start/end indices."""
        from orchestrator.backends.batching import predict

        if self.spec.kill_after_chunks is not None and self.chunks_done >= self.spec.kill_after_chunks:
            # Test hook: die the hard way, like a killed process or a lost node.
            os.kill(os.getpid(), signal.SIGKILL)
        if self.spec.chunk_delay:
            time.sleep(self.spec.chunk_delay)
        wall_started = time.time()
        started = time.perf_counter()
        idx = np.asarray(sample_indices, dtype=np.int64)
        logits = predict(
            self.backend,
            self.input_ids[idx],
            self.input_mask[idx],
            self.segment_ids[idx],
            self.lengths[idx],
            batch_size=self.spec.batch_size,
            # A model exported for a fixed 384 length can't be fed shorter batches.
            remove_padding=getattr(self.backend, "fixed_seq_length", None) is None,
        )
        answer = logits if return_logits else np.argmax(logits, axis=1).astype(np.int16)
        self.chunks_done += 1
        # Plain bytes, not a numpy pickle: the driver may run another numpy major.
        seconds = time.perf_counter() - started
        return ChunkResult(chunk_id, encode(answer), seconds, started=wall_started, finished=wall_started + seconds)


def start_workers(specs: Sequence[WorkerSpec]) -> dict[str, Any]:
    """Create one actor per spec (pinned to its node when given); name -> actor handle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote_cls = ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=1)(InferenceWorker)
    actors = {}
    for spec in specs:
        options: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus}
        if spec.node_id is not None:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec.node_id, soft=False)
        actors[spec.name] = remote_cls.options(**options).remote(spec)
    return actors


class RayExecutor:
    """Executor over Ray actor handles (see ``dispatcher.Executor``)."""

    def __init__(self, actors: dict[str, Any], *, return_logits: bool) -> None:
        self._actors = actors
        self._return_logits = return_logits

    def submit(self, worker: str, chunk: Chunk) -> Hashable:
        return self._actors[worker].infer.remote(chunk.chunk_id, list(chunk.sample_indices), self._return_logits)

    def wait(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]:
        import ray

        ready, _ = ray.wait(list(handles), num_returns=1, timeout=timeout)
        return ready

    def result(self, handle: Hashable) -> ChunkResult:
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        try:
            return ray.get(handle)
        except (RayActorError, ActorDiedError, ActorUnavailableError) as exc:
            raise WorkerLost(_first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
