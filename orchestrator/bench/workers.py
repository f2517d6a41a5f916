"""Ray actors that run chunks, and the executor the dispatcher drives them with.

Only sample indices travel to an actor (as bytes, two per sample for any
SQuAD QSL): it loads the features from its own node's copy (the feature
cache keyed by dataset + vocab). Only logits (accuracy mode) or the number
of samples answered (performance mode: loadgen records no answer there)
travel back, so answers stay small and out of Ray's object store.
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
from orchestrator.bench.query import compact_indices
from orchestrator.bench.payload import decode, encode


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
        from orchestrator.hardware import backend_spec
        from orchestrator.squad.library import load_features

        self.spec = spec
        features = load_features(Path(spec.dataset_path), Path(spec.vocab_path))
        self.input_ids = features.input_ids
        self.input_mask = features.input_mask
        self.segment_ids = features.segment_ids
        self.lengths = features.lengths
        self.cache_key = features.cache_key
        self.backend = get_backend(spec.backend)
        capabilities = backend_spec(spec.backend)
        if capabilities.warmup_compile and self.backend.eager is None and os.environ.get("ORCH_DEEPSPARSE_EAGER") is None:
            # Compile every engine now, before loadgen's clock starts, so a
            # performance run does not time the compilation.
            self.backend.eager = True
        model_path = Path(spec.model_path)
        if spec.precision != "fp32":
            from orchestrator.models.precision import prepare_variant

            model_path = prepare_variant(model_path, spec.precision, features=features).path
        self.model_path = model_path
        self.backend.load(model_path, threads=spec.threads, batch_size=spec.batch_size)
        self.remove_padding = capabilities.variable_seq_length and self.backend.fixed_seq_length is None
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

    def infer(self, chunk_id: int, sample_indices: Any, return_logits: bool) -> ChunkResult:
        """Run one chunk.

        Args:
            chunk_id: echoed in the result.
            sample_indices: the chunk's QSL indices, an ``encode``d array (or a sequence).
            return_logits: answer with the (n, 384, 2) float32 logits (accuracy
                mode); otherwise with the number of samples answered.
        """
        from orchestrator.backends.batching import predict

        if chunk_id < 0:
            return ChunkResult(chunk_id, 0, 0.0)  # warm_up: nothing to run, not counted as a chunk
        if self.spec.kill_after_chunks is not None and self.chunks_done >= self.spec.kill_after_chunks:
            # Test hook: die the hard way, like a killed process or a lost node.
            os.kill(os.getpid(), signal.SIGKILL)
        if self.spec.chunk_delay:
            time.sleep(self.spec.chunk_delay)
        wall_started = time.time()
        started = time.perf_counter()
        idx = decode(sample_indices) if isinstance(sample_indices, dict) else np.asarray(sample_indices)
        if not return_logits and getattr(self.backend, "synthetic", False):
            # The synthetic backend models the whole worker (host preparation included) as
            # a rate: it reads each sample's length from this node's features, by index,
            # and waits the modelled time; gathering 384 tokens per sample here would
            # measure this machine's CPUs, not the driver the synthetic runs exist to load.
            device_start, device_end = self.backend.serve(self.lengths[idx])
            self.chunks_done += 1
            # Its time and idle gaps are the modelled device's (two chunks run at once on it).
            return ChunkResult(chunk_id, len(idx), device_end - device_start, started=device_start, finished=device_end)
        logits = predict(
            self.backend,
            self.input_ids[idx],
            self.input_mask[idx],
            self.segment_ids[idx],
            self.lengths[idx],
            batch_size=self.spec.batch_size,
            # A model exported for a fixed 384 length can't be fed shorter batches.
            remove_padding=self.remove_padding,
        )
        # Plain bytes, not a numpy pickle: the driver may run another numpy major.
        return self._answer(chunk_id, encode(logits) if return_logits else len(idx), started, wall_started)

    def _answer(self, chunk_id: int, payload: Any, started: float, wall_started: float) -> ChunkResult:
        self.chunks_done += 1
        seconds = time.perf_counter() - started
        return ChunkResult(chunk_id, payload, seconds, started=wall_started, finished=wall_started + seconds)


def _actor_options(spec: WorkerSpec) -> dict[str, Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from orchestrator.backends.synthetic import CONCURRENCY, is_synthetic

    options: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus}
    if is_synthetic(spec.backend):
        options["max_concurrency"] = CONCURRENCY
    if spec.node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec.node_id, soft=False)
    return options


def _remote_class():
    import ray

    return ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=1)(InferenceWorker)


def start_workers(specs: Sequence[WorkerSpec]) -> dict[str, Any]:
    """Create one actor per spec (pinned to its node when given); name -> actor handle.

    The actors belong to this driver: they stop when it disconnects.
    """
    remote_cls = _remote_class()
    return {spec.name: remote_cls.options(**_actor_options(spec)).remote(spec) for spec in specs}


def keep_name(spec: WorkerSpec) -> str:
    """The name of the kept actor for ``spec``: it changes with anything that would make it answer differently.

    The spec itself, orch's code (each module's size and modification
    time) and the model, data set and vocab files' size and modification time.
    """
    import json

    from orchestrator import __version__
    from orchestrator.fileio import sha256_text

    def stat(path: str) -> list[int]:
        try:
            st = os.stat(path)
        except OSError:
            return []
        return [st.st_size, st.st_mtime_ns]

    package = Path(__file__).resolve().parents[1]
    code = [(str(p.relative_to(package)), *stat(str(p))) for p in sorted(package.rglob("*.py"))]
    files = [stat(spec.model_path), stat(spec.dataset_path), stat(spec.vocab_path)]
    payload = json.dumps([dataclasses.asdict(spec), files, code, __version__], sort_keys=True, default=str)
    return f"orch-{spec.name}-{sha256_text(payload)[:16]}"


def start_or_reuse_workers(specs: Sequence[WorkerSpec], namespace: str) -> tuple[dict[str, Any], int]:
    """Actors that outlive this driver (on ``orch up``'s local Ray): reused when a kept one matches.

    Kept actors of other layouts are stopped first (they hold CPUs and memory
    that this run needs); the ones of this layout are reused as they are,
    their model loaded and their features in memory.

    Returns:
        (name -> actor handle, how many were reused).
    """
    import ray

    wanted = {keep_name(spec): spec for spec in specs}
    existing = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a.get("namespace") == namespace}
    for name in existing - set(wanted):
        if name.startswith("orch-"):
            try:
                ray.kill(ray.get_actor(name, namespace=namespace))
            except ValueError:
                pass  # it stopped meanwhile
    remote_cls = _remote_class()
    actors = {}
    for name, spec in wanted.items():
        options = _actor_options(spec)
        options.update(name=name, namespace=namespace, lifetime="detached", get_if_exists=True)
        actors[spec.name] = remote_cls.options(**options).remote(spec)
    return actors, len(existing & set(wanted))


def warm_up(actors: dict[str, Any]) -> None:
    """Send every actor an empty chunk, before loadgen starts.

    A driver's first call of an actor method costs tens of milliseconds
    (Ray prepares the method's call path); this keeps that out of the run.
    """
    import ray

    empty = encode(np.empty(0, dtype=np.uint16))
    ray.get([actor.infer.remote(-1, empty, False) for actor in actors.values()], timeout=600)


class RayExecutor:
    """Executor over Ray actor handles (see ``dispatcher.Executor``)."""

    def __init__(self, actors: dict[str, Any], *, return_logits: bool) -> None:
        self._actors = actors
        self._return_logits = return_logits

    def submit(self, worker: str, chunk: Chunk) -> Hashable:
        indices = encode(compact_indices(np.asarray(chunk.sample_indices)))
        return self._actors[worker].infer.remote(chunk.chunk_id, indices, self._return_logits)

    def wait(self, handles: Sequence[Hashable], timeout: float) -> list[Hashable]:
        import ray

        handles = list(handles)
        ready, rest = ray.wait(handles, num_returns=1, timeout=timeout)
        if ready and rest:
            # Everything else that is ready too, without waiting: one wake-up handles them all.
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
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
