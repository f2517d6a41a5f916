"""Reduced-precision variants of a model: built once, cached by model hash and method.

``--precision`` is ``fp32`` (the model as given), ``int8`` (ONNX Runtime's
quantization tools; ``INT8_DEFAULT`` is the method orch keeps, see
docs/performance.md for the measurement), the explicit ``int8-dynamic`` /
``int8-per-token`` / ``int8-static`` to choose the method, or ``fp16`` (CUDA only).

- ``int8-dynamic``: ``quantize_dynamic``: int8 weights (per channel) of every
  weight MatMul, activations quantized per batch at run time.
- ``int8-per-token``: int8 weights per channel as above, and each token's
  activations quantized with a scale of their own at run time
  (``orchestrator.models.per_token``): one outlier token ([CLS]) no longer
  coarsens the scale of all the others.
- ``int8-static``: ``quantize_static`` in QDQ format: weights and activations
  int8, activation ranges calibrated (MinMax) on ``CALIBRATION_SAMPLES``
  SQuAD features of the run's data set, spread evenly over it.
- ``fp16``: ``onnxruntime.transformers.float16`` with fp32 inputs/outputs.
  Refused on the CPU backends: ONNX Runtime's CPU provider has no fp16 MatMul
  kernels on x86 (it would insert casts around fp32 kernels), and orch does not
  call a run fp16 when it is not.
- ``bf16``: no backend of orch runs it (the CPU provider has no bf16 MatMul on
  x86; ``onnxruntime-cuda`` is not wired for it), so it is refused everywhere.

A variant sits in ``<cache>/models/variants/<stem>-<source sha[:16]>-<method>[-<calibration>].onnx``
beside a ``.json`` record of what made it; both are written atomically.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.errors import InputError, ModelError

PRECISIONS = ("fp32", "int8", "int8-dynamic", "int8-per-token", "int8-static", "fp16", "bf16")
# What plain ``int8`` means: the fastest method that keeps bert-99 on the demo model
# (benchmarks/precision.py, docs/performance.md, whole SQuAD part: 99.8% of fp32's F1 on an
# AVX2 machine, where it runs at fp32's speed (1.06x), 99.99% at 1.6x with AVX-512 VNNI;
# int8-dynamic is 1.0-2.1x but keeps 95-97%, which the guard refuses).
INT8_DEFAULT = "int8-per-token"
CALIBRATION_SAMPLES = 128
# The code that builds variants: a cached variant is keyed by a hash of these files and of the
# quantizers' versions (recipe_key), so a change to the recipe can never reuse a stale build.
RECIPE_FILES = ("precision.py", "per_token.py")
CPU_BACKENDS = ("onnxruntime", "deepsparse")


@dataclasses.dataclass(frozen=True)
class ModelVariant:
    """A model file in one precision.

    Attributes:
        precision: ``fp32``, ``int8-dynamic``, ``int8-per-token``, ``int8-static`` or ``fp16`` (never the alias ``int8``).
        path: the file to load.
        source_path: the fp32 model it came from.
        source_sha256: that model's sha256 (what accuracy records are keyed by).
        sha256: this file's sha256.
        weight_data_types: for the submission's measurements.json.
        transformation: how the weights were changed, in words.
    """

    precision: str
    path: Path
    source_path: Path
    source_sha256: str
    sha256: str
    weight_data_types: str
    transformation: str

    @property
    def reduced(self) -> bool:
        """Whether this variant changes the numbers (so the accuracy guard applies)."""
        return self.precision != "fp32"

    def record(self) -> dict[str, Any]:
        """What run.json says about it."""
        return {
            "precision": self.precision,
            "model_sha256": self.sha256,
            "source_model_sha256": self.source_sha256,
            "source_model_path": str(self.source_path),
            "weight_data_types": self.weight_data_types,
            "weight_transformations": self.transformation,
        }


def canonical(precision: str) -> str:
    """``int8`` -> the kept method; the other names unchanged.

    Raises:
        InputError: an unknown name (the message lists the valid ones).
    """
    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r} is unknown", hint=f"choose one of: {', '.join(PRECISIONS)}")
    return INT8_DEFAULT if precision == "int8" else precision


def check_precision(precision: str, backend: str) -> str:
    """The canonical precision, if ``backend`` can run it.

    Raises:
        InputError: unknown precision, fp16 on a CPU backend, or bf16.
    """
    name = canonical(precision)
    if name == "bf16":
        raise InputError(
            "--precision bf16: no orch backend runs bf16 (ONNX Runtime's CPU provider has no bf16 MatMul on x86, "
            "and onnxruntime-cuda is not set up for it)",
            hint="use --precision int8 on CPUs, fp16 on CUDA",
        )
    if name == "fp16" and backend != "onnxruntime-cuda":
        raise InputError(
            f"--precision fp16 needs --backend onnxruntime-cuda; backend {backend!r} runs on the CPU, "
            "where ONNX Runtime has no fp16 MatMul kernels (it would run fp32 with casts)",
            hint="use --precision int8 (or fp32) on CPUs",
        )
    if name == "int8-per-token" and backend == "onnxruntime-cuda":
        raise InputError(
            "--precision int8-per-token is built for ONNX Runtime's CPU provider (its MatMulIntegerToFloat "
            "would leave the GPU)",
            hint="use --precision fp16 on CUDA",
        )
    if name in ("int8-dynamic", "int8-per-token") and backend == "deepsparse":
        raise InputError(
            f"--precision {name}: DeepSparse runs statically quantized (QDQ) models, not ones quantized at run time",
            hint="use --precision int8-static with --backend deepsparse",
        )
    return name


def _variants_dir(cache_dir: Path | None) -> Path:
    from orchestrator.paths import cache_subdir

    folder = Path(cache_dir) if cache_dir is not None else cache_subdir("models") / "variants"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def recipe_key(paths: tuple[Path, ...] | None = None) -> str:
    """12 hex digits that change whenever the code (``RECIPE_FILES``, or ``paths``) or the library versions that build a variant do."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths if paths is not None else tuple(Path(__file__).with_name(n) for n in RECIPE_FILES):
        digest.update(path.read_bytes())
    for module in ("onnx", "onnxruntime"):
        digest.update(f"{module}={_version(module)}".encode())
    return digest.hexdigest()[:12]


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def calibration_rows(total: int, samples: int = CALIBRATION_SAMPLES) -> np.ndarray:
    """``samples`` feature rows spread evenly over ``total`` (all of them when fewer)."""
    if total <= samples:
        return np.arange(total)
    return np.linspace(0, total - 1, samples).round().astype(np.int64)


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over SQuAD features, one feature at its real length at a time."""

    def __init__(self, features, rows: np.ndarray) -> None:
        self._features = features
        self._rows = list(int(r) for r in rows)

    def get_next(self):
        if not self._rows:
            return None
        f, i = self._features, self._rows.pop(0)
        n = int(f.lengths[i])
        return {
            "input_ids": f.input_ids[i : i + 1, :n].astype(np.int64),
            "input_mask": f.input_mask[i : i + 1, :n].astype(np.int64),
            "segment_ids": f.segment_ids[i : i + 1, :n].astype(np.int64),
        }

    def rewind(self) -> None:  # part of the reader interface in newer ORT versions
        pass


# Weights (fnmatch patterns of initializer names) whose MatMul stays fp32 in every int8 variant.
# The start/end head: a few columns wide (no time to win), and it reads fine
# directions of the states that a per-tensor int8 activation scale blurs.
KEEP_FP32 = ("qa_outputs.weight_t",)


def weight_matmuls(model_path: Path, keep_fp32: tuple[str, ...] = KEEP_FP32) -> dict[str, str]:
    """MatMul node name -> its weight, for the MatMuls whose second input is a weight (not attention's
    activation x activation), but those whose weight matches a ``keep_fp32`` pattern."""
    import fnmatch

    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    weights = {init.name for init in model.graph.initializer}
    return {
        n.name: n.input[1] for n in model.graph.node
        if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in weights
        and not any(fnmatch.fnmatchcase(n.input[1], pattern) for pattern in keep_fp32)
    }  # fmt: skip


def _weight_matmuls(model_path: Path) -> list[str]:
    return list(weight_matmuls(model_path))


def named_copy(model_path: Path, out: Path) -> Path:
    """A copy of the model whose every node has a unique name (the quantizers select nodes by name)."""
    import onnx

    model = onnx.load(str(model_path))
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    onnx.save_model(model, str(out))
    return out


def _build(source: Path, precision: str, out: Path, features) -> None:
    import logging

    root = logging.getLogger()
    level = root.level
    # ONNX Runtime's quantizers warn on the root logger ("consider pre-processing") on every build.
    root.setLevel(logging.ERROR)
    try:
        _build_quietly(source, precision, out, features)
    finally:
        root.setLevel(level)


def _build_quietly(source: Path, precision: str, out: Path, features) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="orch-variant-", dir=out.parent) as tmp:
        named = named_copy(source, Path(tmp) / "named.onnx")
        built = Path(tmp) / "variant.onnx"
        if precision == "int8-dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                str(named), str(built), nodes_to_quantize=_weight_matmuls(named), op_types_to_quantize=["MatMul"],
                per_channel=True, weight_type=QuantType.QInt8,
            )  # fmt: skip
        elif precision == "int8-per-token":
            from orchestrator.models import per_token

            per_token.rewrite(named, built, weight_matmuls(named))
        elif precision == "int8-static":
            from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

            quantize_static(
                str(named), str(built), _Calibration(features, calibration_rows(len(features))),
                quant_format=QuantFormat.QDQ, nodes_to_quantize=_weight_matmuls(named), op_types_to_quantize=["MatMul"],
                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
        elif precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save_model(convert_float_to_float16(onnx.load(str(named)), keep_io_types=True), str(built))
        else:  # pragma: no cover - callers pass canonical, checked names
            raise ValueError(precision)
        built.replace(out)


_TRANSFORMATIONS = {
    "int8-dynamic": "quantized by orch with ONNX Runtime quantize_dynamic: int8 per-channel weights of every encoder weight MatMul (the QA head stays fp32), activations quantized at run time",
    "int8-per-token": "quantized by orch (orchestrator.models.per_token): int8 per-channel weights (stored as uint8 with zero point 128, so ONNX Runtime runs its u8u8 GEMM, exact on every x86 CPU) of every encoder weight MatMul (the QA head stays fp32), activations quantized at run time with one scale per token (QuantizeLinear per row, MatMulIntegerToFloat)",
    "int8-static": "quantized by orch with ONNX Runtime quantize_static (QDQ): int8 per-channel weights of every encoder weight MatMul (the QA head stays fp32), uint8 activations calibrated (MinMax) on {n} SQuAD features",
    "fp16": "converted by orch to fp16 with onnxruntime.transformers.float16 (inputs and outputs fp32)",
}


def prepare_variant(model_path: Path, precision: str, *, features=None, cache_dir: Path | None = None) -> ModelVariant:
    """The model in ``precision``, built on first use and cached.

    Args:
        model_path: the fp32 ONNX model (MLPerf BERT interface).
        precision: a name of ``PRECISIONS`` (``int8`` means ``INT8_DEFAULT``); checked
            against a backend beforehand by ``check_precision``.
        features: the run's ``SquadFeatures``; needed by ``int8-static`` (calibration)
            and part of its cache key.
        cache_dir: where variants go (default ``<cache>/models/variants``).

    Returns:
        The ``ModelVariant`` (``fp32``: the model itself).

    Raises:
        InputError: unknown precision.
        ModelError: the model cannot be read or quantized.
    """
    from orchestrator.fileio import atomic_write, sha256_file

    name = canonical(precision)
    source = Path(model_path).resolve()
    try:
        source_sha = sha256_file(source)
    except OSError as exc:
        raise ModelError(f"model file {source} cannot be read ({exc})") from exc
    if name == "fp32":
        return ModelVariant("fp32", source, source, source_sha, source_sha, "fp32", "none")
    if name == "bf16":
        raise InputError("--precision bf16: no orch backend runs bf16", hint="use int8 or fp16")
    tag = f"{name}-r{recipe_key()}"
    transformation = _TRANSFORMATIONS[name]
    if name == "int8-static":
        if features is None:
            raise ModelError("int8-static needs the run's SQuAD features to calibrate on")
        tag += f"-cal{features.cache_key[:12]}"
        transformation = transformation.format(n=len(calibration_rows(len(features))))
    folder = _variants_dir(cache_dir)
    path = folder / f"{source.stem}-{source_sha[:16]}-{tag}.onnx"
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        try:
            _build(source, name, path, features)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"building the {name} variant of {source} failed: {exc}") from exc
        meta = {
            "precision": name,
            "source": str(source),
            "source_sha256": source_sha,
            "sha256": sha256_file(path),
            "transformation": transformation,
            "onnxruntime": _version("onnxruntime"),
            "recipe": recipe_key(),
        }
        atomic_write(meta_path, json.dumps(meta, indent=2) + "\n")
    meta = json.loads(meta_path.read_text())
    weights = "fp16" if name == "fp16" else "int8"
    return ModelVariant(name, path, source, source_sha, meta["sha256"], weights, meta["transformation"])
