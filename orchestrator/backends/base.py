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
}

# The runtime package each backend imports (checked before Ray starts, without importing it).
RUNTIME_PACKAGES: dict[str, str] = {
    "onnxruntime": "onnxruntime",
    "onnxruntime-cuda": "onnxruntime",
    "deepsparse": "deepsparse",
}

# What to install when a backend's runtime package is missing.
INSTALL_HINTS: dict[str, str] = {
    "onnxruntime": "pip install 'orch[cpu]'",
    "onnxruntime-cuda": "pip install 'orch[cuda]' (onnxruntime-gpu, on a machine with an NVIDIA GPU)",
    "deepsparse": "pip install 'orch[deepsparse]' (CPython <= 3.11, x86_64 or aarch64)",
}


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


def check_backend(name: str, *, installed: bool = True) -> None:
    """Fail fast on a backend that cannot run here, without importing its runtime.

    Args:
        name: the ``--backend`` value.
        installed: also check that its runtime package is importable on this
            machine (False when the workers run elsewhere, e.g. a cluster).

    Raises:
        BackendError: unknown name (the message lists the valid ones), or its
            runtime package is not installed (the message says what to install).
    """
    import importlib.util

    if name not in _REGISTRY:
        raise BackendError(
            f"unknown backend {name!r} (--backend)",
            hint=f"choose one of: {', '.join(available_backends())}",
        )
    package = RUNTIME_PACKAGES.get(name)
    if not installed or not package:
        return
    if importlib.util.find_spec(package) is None:
        raise BackendError(
            f"backend {name!r} needs the package {package}, which is not installed here",
            hint=f"install it with: {INSTALL_HINTS.get(name, 'pip install orch')}",
        )
    if name == "onnxruntime-cuda":
        # Refused now rather than by every worker once Ray is up (never a CPU fallback).
        import onnxruntime

        from orchestrator.backends.onnxruntime import OnnxRuntimeCudaBackend

        OnnxRuntimeCudaBackend()._check_providers(onnxruntime)


def get_backend(name: str) -> Backend:
    """A new, unloaded backend instance by name.

    Raises:
        BackendError: unknown name (the message lists the valid ones), or the
            backend's runtime package is not installed (the message says what
            to install).
    """
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
    return getattr(module, class_name)()
