"""ONNX preparation for the DeepSparse backend: static shapes and op forms it runs natively.

DeepSparse 1.8 compiles an engine for one input shape. For each
(batch size, sequence-length bucket) the backend needs, this module writes
a copy of the model with those input dimensions fixed, cached on disk under
``orchestrator.paths.cache_subdir("deepsparse")`` and keyed by the sha256 of
the model file, the shape and ``REWRITE_VERSION``, so later runs skip the
load/rewrite/save. (The compiled engine itself cannot be cached: deepsparse
1.8's Python API has no way to save or load one; it is compiled again in
every process, once per shape.)

Two numerically equivalent rewrites keep the whole graph on DeepSparse's
optimized path (measured on deepsparse 1.8.0: otherwise the ops fall back and
the demo model runs several times slower):

- ``LayerNormalization`` (standard since opset 17) is spelled out as
  ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add, the form PyTorch
  exported before opset 17 and DeepSparse recognizes;
- an exact GELU written ``(x * 0.5) * (1 + erf(x * (1/sqrt 2)))`` is put in
  the order PyTorch exports, ``(x * (1 + erf(x / sqrt 2))) * 0.5``, the only
  order DeepSparse 1.8 fuses.

Only ``onnx`` is needed (1.14 or newer), so this is tested without deepsparse.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from orchestrator.errors import ModelError
from orchestrator.paths import cache_subdir

# Bump when the rewrites change, so cached prepared files are rebuilt.
REWRITE_VERSION = "1"
INPUT_NAMES = ("input_ids", "input_mask", "segment_ids")
# protobuf's hard limit is 2 GiB; keep a margin before moving weights to a side file.
_INLINE_LIMIT = 1_800_000_000
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def prepared_path(model_path: Path, model_sha256: str, batch_size: int, seq_length: int, cache_dir: Path | None = None) -> Path:
    """Where the prepared copy for one shape lives (it may not exist yet)."""
    folder = Path(cache_dir) if cache_dir is not None else cache_subdir("deepsparse")
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(model_path).stem)[:40]
    return folder / f"{stem}-{model_sha256[:16]}-b{batch_size}-s{seq_length}-r{REWRITE_VERSION}.onnx"


def load_model(model_path: Path):
    """Load an ONNX model (with any external data), as a ModelError when it cannot be read."""
    import onnx

    try:
        return onnx.load(str(model_path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise ModelError(f"cannot read ONNX model {model_path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                         hint="check that it is a valid ONNX file") from exc


def prepare_static(model, model_path: Path, model_sha256: str, batch_size: int, seq_length: int, cache_dir: Path | None = None) -> Path:
    """Write (once) the DeepSparse-ready copy of ``model`` with inputs fixed to [batch_size, seq_length].

    Args:
        model: the loaded ``onnx.ModelProto`` (not modified), or None to load
            ``model_path`` only if the prepared file is missing.
        model_path: the original file (for its name and for loading).
        model_sha256: the original file's sha256 (the cache key).
        batch_size, seq_length: the static input shape.
        cache_dir: folder for prepared files (default: the ``deepsparse`` cache folder).

    Returns:
        The prepared file's path (written atomically: temp file, then rename).
    """
    import onnx

    path = prepared_path(model_path, model_sha256, batch_size, seq_length, cache_dir)
    if path.is_file():
        return path
    if model is None:
        model = load_model(model_path)
    prepared = onnx.ModelProto()
    prepared.CopyFrom(model)
    set_input_shapes(prepared, batch_size, seq_length)
    make_deepsparse_friendly(prepared)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if prepared.ByteSize() > _INLINE_LIMIT:
            # The side file gets its final name first; the .onnx appearing marks completion.
            onnx.save_model(prepared, tmp, save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data")
        else:
            onnx.save_model(prepared, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def set_input_shapes(model, batch_size: int, seq_length: int) -> None:
    """Fix every graph input (the three BERT inputs) to [batch_size, seq_length], in place."""
    for value in model.graph.input:
        if value.name not in INPUT_NAMES:
            continue
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, (batch_size, seq_length)):
            dim.ClearField("dim_param")
            dim.dim_value = size


def make_deepsparse_friendly(model) -> int:
    """Apply the LayerNormalization and GELU rewrites in place.

    Returns:
        The number of rewrites made.
    """
    count = _decompose_layer_norms(model) + _reorder_gelus(model)
    if count:
        _topological_sort(model.graph)
        _drop_unused_initializers(model.graph)
    return count


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


class _Names:
    """Fresh tensor names that collide with nothing in the graph."""

    def __init__(self, graph) -> None:
        self.used = {i.name for i in graph.initializer} | {v.name for v in graph.input} | {o for n in graph.node for o in n.output}
        self.count = 0

    def new(self, hint: str) -> str:
        while True:
            self.count += 1
            name = f"ds_{hint}_{self.count}"
            if name not in self.used:
                self.used.add(name)
                return name


def _scalar(graph, name: str) -> float | None:
    """The value of a one-element float initializer, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            value = numpy_helper.to_array(init)
            return float(value.reshape(-1)[0]) if value.size == 1 and value.dtype.kind == "f" else None
    return None


def _decompose_layer_norms(model) -> int:
    from onnx import helper, numpy_helper

    graph = model.graph
    names = _Names(graph)
    opset = _opset(model)
    new_nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        # Only the common case: normalise over the last axis, Mean/InvStdDev outputs unused.
        if node.op_type != "LayerNormalization" or node.domain not in ("", "ai.onnx") or attrs.get("axis", -1) != -1 or len([o for o in node.output if o]) != 1:
            new_nodes.append(node)
            continue
        x, scale = node.input[0], node.input[1]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        eps = names.new("ln_eps")
        two = names.new("ln_two")
        graph.initializer.extend([
            numpy_helper.from_array(np.array(attrs.get("epsilon", 1e-5), np.float32), eps),
            numpy_helper.from_array(np.array(2.0, np.float32), two),
        ])
        if opset >= 18:  # ReduceMean takes its axes as an input from opset 18
            axes = names.new("ln_axes")
            graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), axes))
            reduce = lambda i, o: helper.make_node("ReduceMean", [i, axes], [o], keepdims=1)  # noqa: E731
        else:
            reduce = lambda i, o: helper.make_node("ReduceMean", [i], [o], axes=[-1], keepdims=1)  # noqa: E731
        mean, centered, square, var, var_eps, std, normed = (names.new(h) for h in ("ln_mean", "ln_c", "ln_sq", "ln_var", "ln_ve", "ln_std", "ln_n"))
        scaled = names.new("ln_s") if bias else node.output[0]
        new_nodes += [
            reduce(x, mean),
            helper.make_node("Sub", [x, mean], [centered]),
            helper.make_node("Pow", [centered, two], [square]),
            reduce(square, var),
            helper.make_node("Add", [var, eps], [var_eps]),
            helper.make_node("Sqrt", [var_eps], [std]),
            helper.make_node("Div", [centered, std], [normed]),
            helper.make_node("Mul", [normed, scale], [scaled]),
        ]
        if bias:
            new_nodes.append(helper.make_node("Add", [scaled, bias], [node.output[0]]))
        count += 1
    if count:
        _replace_nodes(graph, new_nodes)
    return count


def _reorder_gelus(model) -> int:
    """Rewrite ``(x*0.5) * (1 + erf(x*(1/sqrt2)))`` as ``(x * (1 + erf(x/sqrt2))) * 0.5``."""
    from onnx import helper, numpy_helper

    graph = model.graph
    names = _Names(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def other(node, name):
        rest = [i for i in node.input if i != name]
        return rest[0] if len(rest) == 1 else None

    count = 0
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        scale = producer.get(erf.input[0])
        if scale is None or scale.op_type != "Mul":
            continue
        constants = [i for i in scale.input if _scalar(graph, i) is not None and abs(_scalar(graph, i) - _INV_SQRT2) < 1e-6]
        if len(constants) != 1 or len(consumers.get(erf.input[0], [])) != 1:
            continue
        x = other(scale, constants[0])
        adds = consumers.get(erf.output[0], [])
        if x is None or len(adds) != 1 or adds[0].op_type != "Add" or _scalar(graph, other(adds[0], erf.output[0]) or "") != 1.0:
            continue
        add = adds[0]
        finals = consumers.get(add.output[0], [])
        if len(finals) != 1 or finals[0].op_type != "Mul":
            continue
        final = finals[0]
        half_node = producer.get(other(final, add.output[0]) or "")
        if half_node is None or half_node.op_type != "Mul" or x not in half_node.input or len(consumers.get(half_node.output[0], [])) != 1:
            continue
        half = other(half_node, x)
        if half is None or _scalar(graph, half) != 0.5:
            continue
        sqrt2 = names.new("gelu_sqrt2")
        graph.initializer.append(numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), sqrt2))
        scale.CopyFrom(helper.make_node("Div", [x, sqrt2], list(scale.output), name=scale.name))
        # half_node now computes x * (1 + erf(...)), the final Mul multiplies by 0.5.
        half_node.CopyFrom(helper.make_node("Mul", [x, add.output[0]], list(half_node.output), name=half_node.name))
        final.CopyFrom(helper.make_node("Mul", [half_node.output[0], half], list(final.output), name=final.name))
        count += 1
    return count


def _topological_sort(graph) -> None:
    """Reorder nodes so that every node comes after the producers of its inputs."""
    available = {i.name for i in graph.initializer} | {v.name for v in graph.input} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ModelError("the DeepSparse rewrite left a graph with a cycle or a missing input", hint="report this model to orch's developers")
        ready_ids = {id(n) for n in ready}
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if id(n) not in ready_ids]
    _replace_nodes(graph, ordered)


def _drop_unused_initializers(graph) -> None:
    """Remove initializers no node reads any more (the rewritten GELU's 1/sqrt2)."""
    if any(a.HasField("g") or len(a.graphs) for n in graph.node for a in n.attribute):
        return  # subgraphs may read outer initializers implicitly: leave them all
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    if len(keep) != len(graph.initializer):
        copies = [type(i)() for i in keep]
        for copy, i in zip(copies, keep):
            copy.CopyFrom(i)
        del graph.initializer[:]
        graph.initializer.extend(copies)


def _replace_nodes(graph, nodes: list) -> None:
    """Set the graph's node list (copies first: deleting from a repeated field may invalidate views)."""
    copies = [type(n)() for n in nodes]
    for copy, n in zip(copies, nodes):
        copy.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def magnitude_prune(model, sparsity: float) -> int:
    """Zero the smallest-magnitude ``sparsity`` fraction of each 2-D MatMul weight, in place.

    For benchmarks and tests of sparse models only: pruning without
    retraining spoils a model's answers; it shows what DeepSparse's sparse
    kernels do with an unstructured-sparse model of the same shape.

    Returns:
        The number of weight tensors pruned.

    Raises:
        ValueError: ``sparsity`` is outside [0, 1).
    """
    from onnx import numpy_helper

    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), not {sparsity}")
    weights = {n.input[1] for n in model.graph.node if n.op_type == "MatMul" and len(n.input) == 2}
    count = 0
    for init in model.graph.initializer:
        if init.name not in weights:
            continue
        w = numpy_helper.to_array(init)
        if w.ndim != 2 or w.dtype.kind != "f":
            continue
        k = int(w.size * sparsity)
        if k == 0:
            continue
        threshold = np.partition(np.abs(w).ravel(), k - 1)[k - 1]
        pruned = np.where(np.abs(w) <= threshold, np.zeros((), w.dtype), w)
        init.CopyFrom(numpy_helper.from_array(pruned, init.name))
        count += 1
    return count
