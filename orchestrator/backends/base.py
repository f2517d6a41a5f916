"""The backend interface and the registry of backends by name (declared in ``orchestrator.hardware``).

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

from orchestrator import hardware
from orchestrator.errors import BackendError

# What to install when a backend's runtime package is missing (declared in the catalog).
INSTALL_HINTS: dict[str, str] = {name: spec.install_hint for name, spec in hardware.BACKENDS.items()}


class Backend(abc.ABC):
    """One inference runtime able to run the MLPerf BERT ONNX interface.

    Subclasses set ``name`` and implement ``load``, ``run`` and ``device_info``.
    What a backend can do is declared in ``orchestrator.hardware.BACKENDS``;
    the attributes below are the run-time state those capabilities act on.

    Attributes:
        fixed_seq_length: set by ``load``: the sequence length the loaded
            model is fixed to, or None when it takes any (padding removal on).
        eager: for backends declared ``warmup_compile``: compile every engine
            in ``load`` (True), lazily (False), or as the environment says (None).
    """

    name: str = ""
    fixed_seq_length: int | None = None
    eager: bool | None = None

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
    return sorted(hardware.BACKENDS)


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

    spec = hardware.backend_spec(name)  # unknown names: one line with the valid ones
    package = spec.module
    if not installed or not package:
        return
    if importlib.util.find_spec(package) is None:
        raise BackendError(
            f"backend {name!r} needs the package {package}, which is not installed here",
            hint=f"install it with: {spec.install_hint}",
        )
    if name == "onnxruntime-cuda":
        # Refused now rather than by every worker once Ray is up (never a CPU fallback).
        import onnxruntime

        from orchestrator.backends.onnxruntime import OnnxRuntimeCudaBackend

        OnnxRuntimeCudaBackend()._check_providers(onnxruntime)


def get_backend(name: str) -> Backend:
    """A new, unloaded backend instance by name (``synthetic`` may carry a spec: ``synthetic:rate=9500``).

    Raises:
        BackendError: unknown name (the message lists the valid ones), options
            given to a backend that takes none or bad options, or the
            backend's runtime package is not installed (the message says what
            to install).
    """
    spec = hardware.backend_spec(name)
    name, colon, options = name.partition(":")
    if colon and not spec.options:
        raise BackendError(f"backend {name!r} takes no options (--backend {name}:{options})", hint=f"use --backend {name}")
    module_name, class_name = spec.impl.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"backend {name!r} cannot be imported ({exc})",
            hint=f"install it with: {spec.install_hint}",
        ) from exc
    cls = getattr(module, class_name)
    return cls(options) if spec.options else cls()
