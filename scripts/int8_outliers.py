"""Two rewrites tried against dynamic int8's accuracy loss on the demo model (issue 15), scored on SQuAD.

Neither is used by orch: this is the measurement behind docs/performance.md ("int8 on an
AVX-512 VNNI machine"). Each rewrite is exact in fp32; the rewritten model is then
quantized the way ``orchestrator.models.precision`` builds ``int8-dynamic``, and scored on
every feature of the data set (or the first --count) against fp32: F1, mean logit error,
samples/s (one process, 2 threads, batch 2).

- ``smooth:ALPHA``: SmoothQuant (Xiao et al., 2023): each weight MatMul input X is divided
  per channel by s = max|X|^ALPHA / max|W|^(1-ALPHA) (a Mul in front), W's rows scaled by s;
  max|X| from 128 calibration features spread over the data set.
- ``cls-split``: every weight MatMul computes sequence position 0 ([CLS]) apart, in fp32 (its
  own fp32 copy of the weight), and the other positions in int8; the outputs are concatenated.
  The reason: the [CLS] token's activations are the per-tensor outlier (max |x| 24-30 at the
  FFN inputs against a median token's 2-5), and dynamic int8 quantizes a whole tensor with one scale.

    python scripts/int8_outliers.py [--count N] cls-split smooth:0.8 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"

# alpha = 0.5 is the paper's default for BERT-sized models.
ALPHA = 0.5
# Scales are kept within this range of 1, so a dead channel (max 0) or a zero weight row cannot blow up.
SCALE_RANGE = (1e-3, 1e3)
# The FFN's two weight MatMuls of every layer (where the [CLS] outlier sits).
FFN_WEIGHTS = ("encoder.layer.*.intermediate.dense.*", "encoder.layer.*.output.dense.*")


def matmul_groups(model, matmuls: Mapping[str, str]) -> dict[str, list[str]]:
    """Input tensor -> the names of the MatMuls (of ``matmuls``: node name -> weight) that read it."""
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.name in matmuls:
            groups.setdefault(node.input[0], []).append(node.name)
    return groups


def activation_maxima(model_path: Path, tensors: Iterable[str], feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) maximum of ``|tensor|`` over every feed, from the fp32 model.

    Args:
        model_path: the fp32 ONNX model.
        tensors: names of intermediate tensors (MatMul inputs).
        feeds: ONNX Runtime input dicts (one feature, or one batch, each).
    """
    import onnx
    import onnxruntime as ort

    names = list(tensors)
    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            peak = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            maxima[name] = peak if name not in maxima else np.maximum(maxima[name], peak)
    if not maxima:
        raise ValueError("no calibration features to measure activations on")
    return maxima


def smoothing_scales(activation_max: np.ndarray, weights: list[np.ndarray], alpha: float = ALPHA) -> np.ndarray:
    """``s`` for one group: activation peaks per input channel, the group's weights ``[in, out]``."""
    weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    a = np.maximum(activation_max.astype(np.float64), 1e-12)
    w = np.maximum(weight_max.astype(np.float64), 1e-12)
    scales = a**alpha / w ** (1.0 - alpha)
    return np.clip(scales, *SCALE_RANGE).astype(np.float32)


def smooth(model_path: Path, out_path: Path, matmuls: Mapping[str, str], feeds, alpha: float = ALPHA) -> int:
    """Write ``model_path`` with every group of ``matmuls`` (node name -> weight) smoothed; returns the group count.

    The MatMul nodes keep their names (the quantizers select nodes by name).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    groups = matmul_groups(model, matmuls)
    maxima = activation_maxima(model_path, groups, feeds)
    inits = {init.name: init for init in model.graph.initializer}
    users: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    by_name = {node.name: node for node in model.graph.node}
    new_nodes: dict[str, onnx.NodeProto] = {}
    for k, (tensor, names) in enumerate(groups.items()):
        weights = [numpy_helper.to_array(inits[matmuls[n]]) for n in names]
        if any(users[matmuls[n]] != 1 for n in names):
            raise ValueError(f"a weight of {names} is shared with another node; it cannot be rescaled in place")
        scales = smoothing_scales(maxima[tensor], weights, alpha)
        for n, w in zip(names, weights):
            inits[matmuls[n]].CopyFrom(numpy_helper.from_array((w * scales[:, None]).astype(w.dtype), matmuls[n]))
        inverse = f"orch_smooth_{k}_inverse_scale"
        smoothed = f"orch_smooth_{k}_input"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scales).astype(np.float32), inverse))
        new_nodes[names[0]] = onnx.helper.make_node("Mul", [tensor, inverse], [smoothed], name=f"orch_smooth_{k}")
        for n in names:
            by_name[n].input[0] = smoothed
    # Each Mul goes right before the first MatMul of its group (topological order holds: its input is theirs).
    ordered = []
    for node in model.graph.node:
        if node.name in new_nodes:
            ordered.append(new_nodes[node.name])
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    onnx.save_model(model, str(out_path))
    return len(groups)
def split_first_token(model_path, out_path, matmuls, ids_input="input_ids"):
    """Write the model with every MatMul of ``matmuls`` computing position 0 apart, in fp32 (see the module docstring)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(model_path))
    inits = {i.name: i for i in m.graph.initializer}
    groups = {}
    for node in m.graph.node:
        if node.name in matmuls:
            groups.setdefault(node.input[0], []).append(node)
    extra_inits = [numpy_helper.from_array(np.array([0], np.int64), "orch_cls_0"),
                   numpy_helper.from_array(np.array([1], np.int64), "orch_cls_1"),
                   numpy_helper.from_array(np.array([2**62], np.int64), "orch_cls_end"),
                   numpy_helper.from_array(np.array([-1], np.int64), "orch_cls_m1")]
    pre = [helper.make_node("Shape", [ids_input], ["orch_cls_bs"], name="orch_cls_shape")]
    widths = {}
    before = {}   # node name -> nodes to insert before
    after = {}
    for k, (x, nodes) in enumerate(groups.items()):
        c = numpy_helper.to_array(inits[matmuls[nodes[0].name]]).shape[0]
        if c not in widths:
            widths[c] = f"orch_cls_shape3_{c}"
            extra_inits.append(numpy_helper.from_array(np.array([c], np.int64), f"orch_cls_c{c}"))
            pre.append(helper.make_node("Concat", ["orch_cls_bs", f"orch_cls_c{c}"], [widths[c]], axis=0, name=f"orch_cls_concat_{c}"))
        x3, xc, xr = f"orch_cls_{k}_x3", f"orch_cls_{k}_xc", f"orch_cls_{k}_xr"
        ins = [helper.make_node("Reshape", [x, widths[c]], [x3], name=f"orch_cls_{k}_r"),
               helper.make_node("Slice", [x3, "orch_cls_0", "orch_cls_1", "orch_cls_1"], [xc], name=f"orch_cls_{k}_sc"),
               helper.make_node("Slice", [x3, "orch_cls_1", "orch_cls_end", "orch_cls_1"], [xr], name=f"orch_cls_{k}_sr")]
        before[nodes[0].name] = ins
        for j, node in enumerate(nodes):
            y = node.output[0]; w = node.input[1]
            out_w = numpy_helper.to_array(inits[w]).shape[1]
            yc, yr, y3 = f"{y}_cls", f"{y}_rest", f"{y}_3d"
            node.input[0] = xr; node.output[0] = yr
            sh = f"orch_cls_out_{out_w}"
            if sh not in {i.name for i in extra_inits}:
                extra_inits.append(numpy_helper.from_array(np.array([-1, out_w], np.int64), sh))
            wc = f"{w}_cls_fp32"
            if wc not in inits:
                copy = onnx.TensorProto(); copy.CopyFrom(inits[w]); copy.name = wc
                extra_inits.append(copy); inits[wc] = copy
            after[node.name] = [helper.make_node("MatMul", [xc, wc], [yc], name=f"{node.name}_cls_fp32"),
                                helper.make_node("Concat", [yc, yr], [y3], axis=1, name=f"{node.name}_cls_concat"),
                                helper.make_node("Reshape", [y3, sh], [y], name=f"{node.name}_cls_back")]
    new = list(pre)
    for node in m.graph.node:
        new.extend(before.get(node.name, []))
        new.append(node)
        new.extend(after.get(node.name, []))
    del m.graph.node[:]; m.graph.node.extend(new); m.graph.initializer.extend(extra_inits)
    onnx.save_model(m, str(out_path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("methods", nargs="+", help="cls-split, smooth:ALPHA, none (plain int8-dynamic), per-token, "
                        "per-token:ffn (the FFN MatMuls per token, the rest dynamic), smooth:ALPHA+per-token")
    parser.add_argument("--count", type=int, default=0, help="first N features (0: all)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import predict
    from orchestrator.models import precision
    from orchestrator.models.resolve import resolve_model
    from orchestrator.squad.accuracy import score_logits
    from orchestrator.squad.library import load_features

    choice = resolve_model("demo", dataset=args.dataset.resolve())
    f = load_features(choice.dataset_path, choice.vocab_path)
    rows = np.arange(args.count or len(f))

    def run(path):
        backend = get_backend("onnxruntime")
        backend.load(path, threads=2, batch_size=2)
        predict(backend, f.input_ids[:4], f.input_mask[:4], f.segment_ids[:4], f.lengths[:4], batch_size=2)
        started = time.perf_counter()
        out = predict(backend, f.input_ids[rows], f.input_mask[rows], f.segment_ids[rows], f.lengths[rows], batch_size=2)
        return out, len(rows) / (time.perf_counter() - started)

    def f1_of(logits):
        return score_logits(f, {int(r): logits[i] for i, r in enumerate(rows)}).f1

    def feeds():
        for i in precision.calibration_rows(len(f)):
            n = int(f.lengths[i])
            yield {name: getattr(f, name)[i : i + 1, :n].astype(np.int64) for name in ("input_ids", "input_mask", "segment_ids")}

    real = f.input_mask[rows].astype(bool)
    ref, ref_speed = run(choice.path)
    ref_f1 = f1_of(ref)
    print(json.dumps({"fp32_f1": round(ref_f1, 3), "fp32_samples_per_second": round(ref_speed, 2), "features": len(rows)}), flush=True)
    with tempfile.TemporaryDirectory(prefix="orch-int8-outliers-") as tmp:
        named = precision.named_copy(choice.path, Path(tmp) / "named.onnx")
        matmuls = precision.weight_matmuls(named)
        for method in args.methods:
            rewritten = Path(tmp) / "rewritten.onnx"
            if method.startswith("smooth:"):
                alpha = method.split(":", 1)[1].split("+", 1)[0]
                smooth(named, rewritten, matmuls, feeds(), alpha=float(alpha))
            elif method == "cls-split":
                split_first_token(named, rewritten, matmuls)
            elif method == "none" or method.startswith("per-token"):
                rewritten = named
            else:
                parser.error(f"unknown method {method!r}")
            method_pt = method.split("+")[-1]
            fp32_logits, _ = run(rewritten)
            out = Path(tmp) / "int8.onnx"
            rest = dict(matmuls)
            if "per-token" in method:
                import fnmatch

                from orchestrator.models import per_token

                patterns = FFN_WEIGHTS if method_pt == "per-token:ffn" else ("*",)
                chosen = {n: w for n, w in matmuls.items() if any(fnmatch.fnmatchcase(w, pat) for pat in patterns)}
                rest = {n: w for n, w in matmuls.items() if n not in chosen}
                per_token.rewrite(rewritten, out, chosen)
                rewritten = out
                out = Path(tmp) / "int8-rest.onnx"
            if rest:
                quantize_dynamic(str(rewritten), str(out), nodes_to_quantize=list(rest), op_types_to_quantize=["MatMul"],
                                 per_channel=True, weight_type=QuantType.QInt8)  # fmt: skip
            else:
                out = rewritten
            logits, speed = run(out)
            f1 = f1_of(logits)
            print(json.dumps({
                "method": method, "rewrite_fp32_max_error": float(np.abs(fp32_logits[real] - ref[real]).max()),
                "f1": round(f1, 3), "f1_share_of_fp32": round(f1 / ref_f1, 4),
                "logit_abs_error_mean": round(float(np.abs(logits[real] - ref[real]).mean()), 4),
                "samples_per_second": round(speed, 2), "speedup_vs_fp32": round(speed / ref_speed, 2),
            }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
