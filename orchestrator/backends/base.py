"""The backend interface and the registry of backends by name.

A backend runs the MLPerf BERT ONNX interface: int64 ``input_ids``,
``input_mask``, ``segment_ids`` of shape [batch, seq] in, start and end
logits [batch, seq] float32 out. Padding removal and batching live in
``orchestrator.backends.batching`` and work for every backend.

Backends are imported lazily so that the controller runs without
onnxruntime or deepsparse installed.
"""

from __future__ import annotations

import abc
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import BackendError

# name -> "module:Class". Import happens only when a backend is asked for.
_REGISTRY: dict[str, str] = {
    "onnxruntime": "orchestrator.backends.onnxruntime:OnnxRuntimeBackend",
    "onnxruntime-cuda": "orchestrator.backends.onnxruntime:OnnxRuntimeCudaBackend",
    "deepsparse": "orchestrator.backends.deepsparse:DeepSparseBackend",
    # Modelled answer times, no inference: stands in for accelerators orch does not have.
    "synthetic": "orchestrator.backends.synthetic:SyntheticBackend",
}

# What to install when a backend's runtime package is missing.
INSTALL_HINTS: dict[str, str] = {
    "onnxruntime": "pip install 'orch[cpu]'",
    "onnxruntime-cuda": "pip install 'orch[cuda]' (onnxruntime-gpu, on a machine with an NVIDIA GPU)",
    "deepsparse": "pip install 'orch[deepsparse]' (CPython <= 3.11, x86_64 or aarch64)",
    "synthetic": "pip install orch (it needs no runtime)",
}

# Backends whose name may carry options after a colon (``synthetic:rate=9500``).
_TAKES_OPTIONS = ("synthetic",)


class Backend(abc.ABC):
    """One inference runtime able to run the MLPerf BERT ONNX interface.

    Subclasses set ``name`` and implement ``load``, ``run`` and ``device_info``.
    """

    name: str = ""

    @abc.abstractmethod
    def load(self, model_path: Path, *, threads: int | None = None, batch_size: int = 1) -> None:
        """Load the model.

        Args:
            model_path: an ONNX file with the MLPerf BERT interface.
            threads: intra-op threads for the session (None: the runtime's default).
            batch_size: the largest batch ``run`` will be given.

        Raises:
            ModelError: the file is missing or its inputs/outputs do not match.
            BackendError: the runtime is missing or cannot run as asked
                (for example CUDA asked for but not active).
        """

    @abc.abstractmethod
    def run(
        self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch.

        Args:
            input_ids, input_mask, segment_ids: int64 arrays [batch, seq].

        Returns:
            (start_logits, end_logits), float32 arrays [batch, seq].
        """

    @abc.abstractmethod
    def device_info(self) -> dict[str, Any]:
        """Facts about where the model runs (device, providers, threads, versions)."""


def available_backends() -> list[str]:
    """Names of every registered backend (installed or not)."""
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    """A new, unloaded backend instance by name (``synthetic`` may carry a spec: ``synthetic:rate=9500``).

    Raises:
        BackendError: unknown name (the message lists the valid ones), options
            given to a backend that takes none or bad options, or the
            backend's runtime package is not installed (the message says what
            to install).
    """
    name, colon, options = name.partition(":")
    if colon and name not in _TAKES_OPTIONS and name in _REGISTRY:
        raise BackendError(f"backend {name!r} takes no options (--backend {name}:{options})", hint=f"use --backend {name}")
    target = _REGISTRY.get(name)
    if target is None:
        raise BackendError(
            f"unknown backend {name!r} (--backend)",
            hint=f"choose one of: {', '.join(available_backends())}",
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} cannot be imported ({exc})",
            hint=f"install it with: {INSTALL_HINTS.get(name, 'pip install orch')}",
        ) from exc
    cls = getattr(module, class_name)
    return cls(options) if name in _TAKES_OPTIONS else cls()
