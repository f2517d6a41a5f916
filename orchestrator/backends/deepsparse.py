"""The DeepSparse backend (``deepsparse``): Neural Magic's CPU runtime, dense or sparse ONNX models.

DeepSparse 1.8 compiles an engine for one static input shape, so this backend
keeps one engine per (sequence-length bucket of ``batching.BUCKETS``, batch
size), compiled on the first batch that needs it (or all at ``load`` with
``eager=True`` / ``ORCH_DEEPSPARSE_EAGER=1``). A model exported with a fixed
sequence length gets a single engine of that length (padding removal off). A batch narrower than its
bucket is padded with padding tokens (mask 0, invisible to real tokens) and a
last partial batch is padded to the engine's batch size by repeating its last
row; both are trimmed off the outputs.

What is reused between runs: the static-shape, DeepSparse-ready copy of the
model per shape (``deepsparse_graph.prepare_static``, cached on disk). The
compiled engines are not: deepsparse 1.8 cannot save or load them, so each
process compiles the shapes it uses again (seconds per shape for the demo
model, longer for BERT-Large). The backend never passes ``input_shapes`` to
``deepsparse.Engine``: deepsparse 1.8 then rewrites the given model file in
place (``override_onnx_input_shapes(..., inplace=True)``), which would fix
the user's (or the cached demo) model to one shape.

Needs ``pip install 'orch[deepsparse]'`` (deepsparse 1.8.0: CPython <= 3.11,
numpy < 2, onnx 1.14.1).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.backends.base import INSTALL_HINTS, Backend
from orchestrator.backends.batching import BUCKETS, MAX_SEQ_LENGTH, bucket_length
from orchestrator.errors import BackendError, ModelError

EAGER_ENV = "ORCH_DEEPSPARSE_EAGER"
_ONNX_TYPES = {1: "tensor(float)", 10: "tensor(float16)", 6: "tensor(int32)", 7: "tensor(int64)"}


def _import_deepsparse():
    # deepsparse sends usage analytics by default; nodes are often offline and runs must not phone home.
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    try:
        import deepsparse
    except ImportError as exc:
        raise BackendError(
            f"backend 'deepsparse' needs the deepsparse package, which cannot be imported ({exc})",
            hint=f"install it with: {INSTALL_HINTS['deepsparse']}",
        ) from exc
    except Exception as exc:  # an unsupported CPU or a numpy 2 environment fails inside the import
        text = str(exc).strip().splitlines()
        raise BackendError(
            f"backend 'deepsparse': importing deepsparse failed ({type(exc).__name__}: {text[0] if text else ''})",
            hint=f"deepsparse 1.8 needs x86_64 AVX2/AVX-512 or aarch64, numpy < 2 and CPython <= 3.11: {INSTALL_HINTS['deepsparse']}",
        ) from exc
    return deepsparse


class _ValueView:
    """An ONNX graph input/output seen like onnxruntime's NodeArg (name, type, shape)."""

    def __init__(self, value) -> None:
        tensor = value.type.tensor_type
        self.name = value.name
        self.type = _ONNX_TYPES.get(tensor.elem_type, f"tensor(elem_type {tensor.elem_type})")
        self.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]


class _GraphView:
    """An ``onnx.ModelProto`` with the two methods ``onnxruntime.check_interface`` reads."""

    def __init__(self, model) -> None:
        initializers = {i.name for i in model.graph.initializer}
        # Old exporters list initializers among the inputs too; they are not inputs to feed.
        self._inputs = [_ValueView(v) for v in model.graph.input if v.name not in initializers]
        self._outputs = [_ValueView(v) for v in model.graph.output]

    def get_inputs(self) -> list[_ValueView]:
        return self._inputs

    def get_outputs(self) -> list[_ValueView]:
        return self._outputs


def pad_batch(arrays: list[np.ndarray], batch_size: int, seq_length: int) -> list[np.ndarray]:
    """Pad [n, width] int arrays to [batch_size, seq_length]: columns with zeros, rows by repeating the last row.

    Zeros are the padding token, mask 0 and segment 0, so added columns are
    invisible to real tokens; repeated rows are real inputs whose outputs are dropped.

    Raises:
        ValueError: n is 0 or above batch_size, or width above seq_length.
    """
    n, width = arrays[0].shape
    if not 0 < n <= batch_size or width > seq_length:
        raise ValueError(f"cannot pad a [{n}, {width}] batch to [{batch_size}, {seq_length}]")
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.int64)
        if width < seq_length:
            a = np.pad(a, ((0, 0), (0, seq_length - width)), constant_values=0)
        if n < batch_size:
            a = np.pad(a, ((0, batch_size - n), (0, 0)), mode="edge")
        out.append(np.ascontiguousarray(a))
    return out


class DeepSparseBackend(Backend):
    """DeepSparse on the CPU: one compiled engine per (batch size, sequence-length bucket).

    Args:
        eager: compile the engines of every bucket in ``load`` instead of on first use
            (also turned on by the environment variable ``ORCH_DEEPSPARSE_EAGER=1``).
        cache_dir: folder for the prepared static-shape models (default: the
            ``deepsparse`` folder of orch's cache).
    """

    name = "deepsparse"
    device = "cpu"

    def __init__(self, *, eager: bool | None = None, cache_dir: Path | None = None) -> None:
        self.eager = eager
        self.cache_dir = cache_dir
        self.model_path: Path | None = None
        self.model_sha256 = ""
        self.threads: int | None = None
        self.batch_size = 1
        self.output_indices: tuple[int, int] = (0, 1)
        self.input_order: list[int] = [0, 1, 2]
        # None: the model takes any length, one engine per bucket (padding removal on).
        self.fixed_seq_length: int | None = None
        self.engines: dict[tuple[int, int], Any] = {}
        self.compile_seconds: dict[tuple[int, int], float] = {}
        self._model = None  # the loaded ModelProto, kept only while preparing eagerly
        self._deepsparse = None
        self._compile_mode = "lazy"

    def load(self, model_path: Path, *, threads: int | None = None, batch_size: int = 1) -> None:
        """Check the model and get ready to compile engines.

        Args:
            model_path: an ONNX file with the MLPerf BERT interface (dense or sparse).
            threads: cores for the engines (``num_cores``; None or 0: deepsparse's
                default, every physical core of one socket).
            batch_size: the engines' batch size; smaller batches are padded to it.

        Raises:
            ModelError: the file is missing, unreadable, or not the MLPerf BERT interface.
            BackendError: deepsparse is missing, or threads/batch_size are invalid.
        """
        from orchestrator.backends import deepsparse_graph as graph
        from orchestrator.fileio import cached_sha256
        from orchestrator.backends.onnxruntime import INPUT_NAMES, check_interface

        self._deepsparse = _import_deepsparse()
        path = Path(model_path).expanduser().resolve()
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist", hint="check --model, or run: orch fetch")
        if threads is not None and threads < 0:
            raise BackendError(f"threads must be >= 0, not {threads}", hint="pass --threads 0 for the default")
        if batch_size < 1:
            raise BackendError(f"batch size must be >= 1, not {batch_size}", hint="pass --batch-size 1 or more")
        model = graph.load_model(path)
        view = _GraphView(model)
        output_names, fixed = check_interface(view, path)
        if fixed is not None and fixed > MAX_SEQ_LENGTH:
            raise ModelError(f"model {path} fixes its sequence length to {fixed}, above {MAX_SEQ_LENGTH}", hint="give a model for SQuAD features of 384 tokens")
        # A model fixed to one length gets one engine of that length (padding removal off).
        self.fixed_seq_length = fixed
        all_outputs = [o.name for o in view.get_outputs()]
        self.output_indices = (all_outputs.index(output_names[0]), all_outputs.index(output_names[1]))
        # The engine takes its inputs in graph order, whatever that order is.
        order = [v.name for v in view.get_inputs()]
        self.input_order = [INPUT_NAMES.index(name) for name in order]
        self.model_path = path
        self.model_sha256 = cached_sha256(path)
        self.threads = threads
        self.batch_size = batch_size
        self.engines.clear()
        self.compile_seconds.clear()
        eager = self.eager if self.eager is not None else os.environ.get(EAGER_ENV, "").lower() not in ("", "0", "false", "no")
        self._compile_mode = "eager" if eager else "lazy"
        if eager:
            self._model = model
            try:
                for seq in self.buckets():
                    self.engine_for(seq)
            finally:
                self._model = None

    def buckets(self) -> tuple[int, ...]:
        """The sequence lengths engines are compiled for: the model's fixed one, or ``batching.BUCKETS``."""
        return (self.fixed_seq_length,) if self.fixed_seq_length is not None else BUCKETS

    def engine_for(self, seq_length: int):
        """The engine for [batch_size, seq_length], compiled (and its model prepared) on first use."""
        from orchestrator.backends import deepsparse_graph as graph

        if self.model_path is None or self._deepsparse is None:
            raise BackendError(f"backend {self.name!r} was used before load()")
        key = (self.batch_size, seq_length)
        engine = self.engines.get(key)
        if engine is None:
            started = time.perf_counter()
            prepared = graph.prepare_static(self._model, self.model_path, self.model_sha256, self.batch_size, seq_length, self.cache_dir)
            try:
                engine = self._deepsparse.Engine(str(prepared), batch_size=self.batch_size, num_cores=self.threads or None)
            except Exception as exc:  # the compiler raises RuntimeError/ValueError with long texts
                text = str(exc).strip().splitlines()
                raise BackendError(
                    f"deepsparse cannot compile {self.model_path} for shape [{self.batch_size}, {seq_length}]: {text[0] if text else type(exc).__name__}",
                    hint="check the model runs with --backend onnxruntime; deepsparse needs x86_64 AVX2 or aarch64",
                ) from exc
            self.engines[key] = engine
            self.compile_seconds[key] = time.perf_counter() - started
        return engine

    def run(self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run one batch of any size and width up to 384; see ``Backend.run``."""
        arrays = [np.asarray(input_ids), np.asarray(input_mask), np.asarray(segment_ids)]
        n, width = arrays[0].shape
        if width > MAX_SEQ_LENGTH:
            raise ValueError(f"sequence length {width} is above {MAX_SEQ_LENGTH}")
        if self.fixed_seq_length is not None:
            if width > self.fixed_seq_length:
                raise ValueError(f"sequence length {width} is above the model's fixed {self.fixed_seq_length}")
            seq = self.fixed_seq_length
        else:
            seq = bucket_length(width)
        engine = self.engine_for(seq)
        start = np.empty((n, width), np.float32)
        end = np.empty((n, width), np.float32)
        for first in range(0, n, self.batch_size):
            piece = [a[first : first + self.batch_size] for a in arrays]
            rows = piece[0].shape[0]
            padded = pad_batch(piece, self.batch_size, seq)
            outputs = engine.run([padded[i] for i in self.input_order])
            start[first : first + rows] = outputs[self.output_indices[0]][:rows, :width]
            end[first : first + rows] = outputs[self.output_indices[1]][:rows, :width]
        return start, end

    def device_info(self) -> dict[str, Any]:
        """Device, cores, batch size, deepsparse version and CPU flavour, engines compiled so far."""
        engines = list(self.engines.values())
        return {
            "backend": self.name,
            "device": self.device,
            "threads": self.threads,
            "num_cores": engines[0].num_cores if engines else None,
            "batch_size": self.batch_size,
            "deepsparse": getattr(self._deepsparse, "__version__", None),
            "cpu_avx_type": engines[0].cpu_avx_type if engines else None,
            "model_path": str(self.model_path) if self.model_path else None,
            "fixed_seq_length": self.fixed_seq_length,
            "compile": self._compile_mode,  # lazy: engines appear as buckets are first used
            "engines": [f"{b}x{s}" for b, s in sorted(self.engines)],
            "compile_seconds": round(sum(self.compile_seconds.values()), 3),
            # Below 1.0, part of the graph fell back to a slower path.
            "fraction_of_supported_ops": min((e.fraction_of_supported_ops for e in engines), default=None),
        }
