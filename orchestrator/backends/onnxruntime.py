"""ONNX Runtime backends: ``onnxruntime`` (CPU) and ``onnxruntime-cuda`` (NVIDIA GPU).

``onnxruntime-cuda`` never falls back to the CPU silently: when the CUDA
execution provider is not available, or the session did not keep it (ONNX
Runtime drops it with only a warning when the CUDA libraries fail to load),
``load`` raises ``BackendError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.backends.base import INSTALL_HINTS, Backend
from orchestrator.errors import BackendError, ModelError

INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
_FLOAT_TYPES = ("tensor(float)", "tensor(float16)")


def _import_onnxruntime(backend: str):
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            f"backend {backend!r} needs onnxruntime, which is not installed",
            hint=f"install it with: {INSTALL_HINTS[backend]}",
        ) from exc
    return onnxruntime


def check_interface(session, model_path: Path) -> tuple[list[str], int | None]:
    """Check a session against the MLPerf BERT interface.

    Args:
        session: an ``onnxruntime.InferenceSession``.
        model_path: the file, for the error message.

    Returns:
        (the names of the start and end logits outputs, in that order;
        the fixed sequence length of the inputs, or None when it is dynamic).

    Raises:
        ModelError: an input is missing, not int64 or not of rank 2, or there
            are fewer than two float outputs.
    """
    inputs = {i.name: i for i in session.get_inputs()}
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing:
        raise ModelError(
            f"model {model_path} lacks the input(s) {', '.join(missing)} (it has: {', '.join(inputs) or 'none'})",
            hint="give an ONNX file with the MLPerf BERT interface: int64 input_ids, input_mask, segment_ids [batch, seq]",
        )
    extra = [n for n in inputs if n not in INPUT_NAMES]
    if extra:
        raise ModelError(
            f"model {model_path} has unexpected input(s) {', '.join(extra)}",
            hint="the MLPerf BERT interface has exactly input_ids, input_mask, segment_ids",
        )
    seq_lengths = set()
    for name in INPUT_NAMES:
        info = inputs[name]
        if info.type != "tensor(int64)" or len(info.shape) != 2:
            raise ModelError(
                f"model {model_path} input {name} is {info.type} of shape {info.shape}, not int64 [batch, seq]",
                hint="give an ONNX file with the MLPerf BERT interface",
            )
        seq_lengths.add(info.shape[1] if isinstance(info.shape[1], int) else None)
    outputs = [o for o in session.get_outputs() if o.type in _FLOAT_TYPES]
    if len(outputs) < 2:
        raise ModelError(
            f"model {model_path} has {len(outputs)} float output(s); the MLPerf BERT interface needs start and end logits",
            hint="give an ONNX file whose first two float outputs are start and end logits [batch, seq]",
        )
    fixed = seq_lengths.pop() if len(seq_lengths) == 1 else None
    return [outputs[0].name, outputs[1].name], fixed


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU (CPUExecutionProvider)."""

    name = "onnxruntime"
    device = "cpu"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def __init__(self) -> None:
        self.session = None
        self.model_path: Path | None = None
        self.threads: int | None = None
        self.batch_size = 1
        self.output_names: list[str] = []
        # None when the model accepts any sequence length (padding removal works).
        self.fixed_seq_length: int | None = None

    def _check_providers(self, ort) -> None:
        """Hook for the CUDA backend: refuse early when its provider is absent."""

    def _check_session(self, session) -> None:
        """Hook for the CUDA backend: refuse a session that dropped its provider."""

    def load(self, model_path: Path, *, threads: int | None = None, batch_size: int = 1) -> None:
        """Open an ONNX Runtime session and check the model's interface.

        Args:
            model_path: an ONNX file with the MLPerf BERT interface.
            threads: intra-op threads (None or 0: ONNX Runtime's default, one per core);
                inter-op threads are 1 (the graph runs sequentially).
            batch_size: the largest batch ``run`` will be given (kept for ``device_info``).

        Raises:
            ModelError: the file is missing, is not a loadable ONNX model, or does
                not have the MLPerf BERT interface.
            BackendError: onnxruntime is missing or cannot run as asked.
        """
        ort = _import_onnxruntime(self.name)
        path = Path(model_path).expanduser().resolve()
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist", hint="check --model, or run: orch fetch")
        if threads is not None and threads < 0:
            raise BackendError(f"threads must be >= 0, not {threads}", hint="pass --threads 0 for the default")
        self._check_providers(ort)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or 0)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: shape-merge warnings are noise
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=list(self.providers))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"onnxruntime cannot load model {path}: {first_line}", hint="check that it is a valid ONNX file") from exc
        self._check_session(session)
        self.output_names, self.fixed_seq_length = check_interface(session, path)
        self.session = session
        self.model_path = path
        self.threads = threads
        self.batch_size = batch_size

    def run(self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch; see ``Backend.run``."""
        if self.session is None:
            raise BackendError(f"backend {self.name!r} was used before load()")
        feed = {
            "input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
            "input_mask": np.ascontiguousarray(input_mask, dtype=np.int64),
            "segment_ids": np.ascontiguousarray(segment_ids, dtype=np.int64),
        }
        start, end = self.session.run(self.output_names, feed)
        return np.asarray(start, np.float32), np.asarray(end, np.float32)

    def device_info(self) -> dict[str, Any]:
        """Device, providers in use, threads, onnxruntime version and model path."""
        import onnxruntime as ort

        return {
            "backend": self.name,
            "device": self.device,
            "providers": list(self.session.get_providers()) if self.session is not None else [],
            "threads": self.threads,
            "batch_size": self.batch_size,
            "onnxruntime": ort.__version__,
            "model_path": str(self.model_path) if self.model_path else None,
            "fixed_seq_length": self.fixed_seq_length,
        }


class OnnxRuntimeCudaBackend(OnnxRuntimeBackend):
    """ONNX Runtime on an NVIDIA GPU (CUDAExecutionProvider); never a silent CPU fallback."""

    name = "onnxruntime-cuda"
    device = "cuda"
    # The CPU provider stays listed for the few nodes CUDA has no kernel for
    # (shape arithmetic); the session must still keep CUDA, checked below.
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def _check_providers(self, ort) -> None:
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise BackendError(
                f"backend 'onnxruntime-cuda': onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                f"(available: {', '.join(available)})",
                hint=f"install {INSTALL_HINTS[self.name]} and uninstall the CPU-only onnxruntime package, or use --backend onnxruntime",
            )

    def _check_session(self, session) -> None:
        active = session.get_providers()
        if "CUDAExecutionProvider" not in active:
            raise BackendError(
                f"backend 'onnxruntime-cuda': the session dropped CUDAExecutionProvider (active: {', '.join(active)})",
                hint="check the NVIDIA driver and the CUDA/cuDNN libraries onnxruntime-gpu needs, or use --backend onnxruntime",
            )
