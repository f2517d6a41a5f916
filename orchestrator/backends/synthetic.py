"""The ``synthetic`` backend: answers after a modelled time, without computing.

It stands in for an accelerator that orch does not have here: each batch
costs ``overhead_ms`` plus ``1 / rate`` seconds per sample (default: one
H200's published BERT-99 Offline rate, about 9,500 samples/s), and the
logits it returns have the MLPerf shape but carry no answer (they are the
input mask cast to float). It needs neither onnxruntime nor a GPU, so it runs
on every node profile: a sandbox of CPU nodes can stand in for a GPU cluster
and show whether one loadgen driver keeps such a cluster fed.

A run made with it is labelled synthetic in every output (results table,
run.json, --json), and a submission refuses it.

The backend is named with an optional spec: ``synthetic`` or
``synthetic:rate=25000,overhead_ms=0.5,per_node=8``:

- ``rate``: samples per second of one worker (> 0);
- ``overhead_ms``: fixed cost of one batch (>= 0);
- ``per_node``: workers per node on a deployed cluster (like GPUs per node; >= 1).

The modelled time runs on a clock that the backend keeps, the modelled
device: a batch starts when the previous one ended or when it arrives,
whichever is later, and the caller sleeps until the batch's modelled end.
The worker runs two chunks at a time on it (``CONCURRENCY``): while the
device works on one, the host side receives and prepares the next, as an
accelerator's host does, so neither that per-chunk work nor a late wake-up
slows the worker down: it answers at exactly its modelled rate whenever it
is kept fed, and its idle gaps are the device's.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.backends.base import Backend
from orchestrator.errors import BackendError

NAME = "synthetic"
# One H200's BERT-99 Offline rate in MLPerf Inference v4.1 (9,200-9,900 samples/s per H200/GH200).
DEFAULT_RATE = 9500.0
NOTE = "SYNTHETIC backend: modelled answer times, no inference; never a submission"
# Chunks a synthetic worker runs at once: one on the modelled device, the next one's host side.
CONCURRENCY = 2


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """The modelled worker: its rate, its per-batch cost and how many run per node."""

    rate: float = DEFAULT_RATE
    overhead_ms: float = 0.0
    per_node: int = 1

    def seconds(self, samples: int, batches: int) -> float:
        """Modelled time of ``samples`` samples cut into ``batches`` batches."""
        return batches * self.overhead_ms / 1000.0 + samples / self.rate

    def as_dict(self) -> dict[str, Any]:
        """What run.json records about the model (``rate`` is per worker)."""
        return {"rate_per_worker": self.rate, "overhead_ms": self.overhead_ms, "per_node": self.per_node, "note": NOTE}


def is_synthetic(backend: str | None) -> bool:
    """Whether a backend name (with or without a spec) is the synthetic backend."""
    return bool(backend) and backend.partition(":")[0] == NAME


def parse_spec(backend: str) -> SyntheticSpec:
    """The spec of ``synthetic[:key=value,...]``.

    Raises:
        BackendError: an unknown key, a value that is not a number, or one out of range.
    """
    name, _, options = backend.partition(":")
    if name != NAME:
        raise BackendError(f"backend {backend!r} is not the synthetic backend")
    values: dict[str, float] = {}
    fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise BackendError(
                f"--backend {backend}: {part!r} is not one of rate=, overhead_ms=, per_node=",
                hint="e.g. --backend synthetic:rate=9500,overhead_ms=0.5,per_node=8",
            )
        try:
            values[key] = float(raw)
        except ValueError:
            raise BackendError(f"--backend {backend}: {key}={raw!r} is not a number") from None
    spec = SyntheticSpec(
        rate=values.get("rate", DEFAULT_RATE),
        overhead_ms=values.get("overhead_ms", 0.0),
        per_node=int(values.get("per_node", 1)),
    )
    if not (spec.rate > 0 and math.isfinite(spec.rate)):
        raise BackendError(f"--backend {backend}: rate must be a positive number of samples/s")
    if not (spec.overhead_ms >= 0 and math.isfinite(spec.overhead_ms)):
        raise BackendError(f"--backend {backend}: overhead_ms must be >= 0")
    if spec.per_node < 1 or values.get("per_node", 1) != spec.per_node:
        raise BackendError(f"--backend {backend}: per_node must be a whole number >= 1")
    return spec


class ModelledClock:
    """The modelled device: work queues on it and ends when the model says (thread-safe).

    Args:
        spec: the modelled worker.
        clock, sleep: injected for tests (default ``time.time``, ``time.sleep``).
    """

    def __init__(self, spec: SyntheticSpec, *, clock=time.time, sleep=time.sleep) -> None:
        self.spec = spec
        self._clock = clock
        self._sleep = sleep
        self._free_at = 0.0
        self._lock = threading.Lock()

    def spend(self, samples: int, batches: int) -> tuple[float, float]:
        """Queue work on the modelled device and wait until it is done.

        Returns:
            (start, end) of the work on the device, on ``clock``.
        """
        cost = self.spec.seconds(samples, batches)
        with self._lock:
            now = self._clock()
            start = max(now, self._free_at)
            self._free_at = end = start + cost
        if end > now:
            self._sleep(end - now)
        return start, end


class SyntheticBackend(Backend):
    """Answers after the modelled time with correctly shaped logits; see the module docstring."""

    name = NAME
    synthetic = True
    # Any sequence length is accepted, so padding removal runs as for a real model.
    fixed_seq_length = None

    def __init__(self, options: str = "") -> None:
        self.spec = parse_spec(f"{NAME}:{options}" if options else NAME)
        self.clock = ModelledClock(self.spec)
        self.batch_size = 1
        self.model_path: Path | None = None

    def load(self, model_path: Path, *, threads: int | None = None, batch_size: int = 1) -> None:
        """Nothing to load: the model file is not read (the answers are modelled)."""
        self.model_path = Path(model_path)
        self.batch_size = max(1, int(batch_size))

    def run(self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One batch after its modelled time; start and end logits are the mask cast to float32."""
        self.clock.spend(int(input_mask.shape[0]), 1)
        logits = np.asarray(input_mask, dtype=np.float32)
        return logits, logits

    def serve(self, lengths: np.ndarray) -> tuple[float, float]:
        """A performance-mode chunk: wait its modelled time, in batches of ``batch_size``.

        Args:
            lengths: the real length of each sample of the chunk, read by the
                worker from its own copy of the features by sample index.

        Returns:
            (start, end) of the chunk on the modelled device (``time.time()``).
        """
        n = int(len(lengths))
        return self.clock.spend(n, -(-n // self.batch_size))

    def device_info(self) -> dict[str, Any]:
        """The model of the device (no real device is used)."""
        return {"backend": self.name, "device": "synthetic", "batch_size": self.batch_size, **self.spec.as_dict()}
