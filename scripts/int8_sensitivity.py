"""Which weight MatMuls cost the demo model its F1 under dynamic int8, and what keeping them fp32 wins back.

For each group of weight MatMuls (one role in every layer: query, key, value,
attention output, FFN in, FFN out; or one whole layer), builds the dynamic int8
model of ``orchestrator.models.precision`` (same settings) with that group left
fp32, and scores it on the first --count SQuAD features against fp32 (F1, logit
error, samples/s in one process). ``--spread`` takes --count features spread
evenly over the data set instead of the first ones (the first ones of the
shared SQuAD part are all one article). Groups of ``--try`` (comma-separated weight
patterns, repeatable) are scored too. This is the measurement behind
``precision.INT8_DYNAMIC_KEEP_FP32`` (docs/performance.md).

    python scripts/int8_sensitivity.py [--count 200] [--threads 2] [--batch-size 2] [--try 'encoder.layer.*.output.dense.*']
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"
# The six weight MatMuls of a BERT layer, by their (Hugging Face) weight names.
ROLES = {
    "query": ("*.attention.self.query.*",), "key": ("*.attention.self.key.*",), "value": ("*.attention.self.value.*",),
    "attention-out": ("*.attention.output.dense.*",), "ffn-in": ("*.intermediate.dense.*",),
    "ffn-out": ("encoder.layer.[0-9].output.dense.*", "encoder.layer.[0-9][0-9].output.dense.*"),
}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--spread", action="store_true", help="features spread over the data set, not the first --count")
    parser.add_argument("--no-groups", action="store_true", help="score only --try sets (and all-int8)")
    parser.add_argument("--try", dest="tries", action="append", default=[], help="comma-separated weight patterns kept fp32")
    args = parser.parse_args()

    import numpy as np
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import predict
    from orchestrator.models import precision
    from orchestrator.models.resolve import resolve_model
    from orchestrator.squad.accuracy import score_logits
    from orchestrator.squad.library import load_features

    choice = resolve_model("demo", dataset=args.dataset.resolve())
    f = load_features(choice.dataset_path, choice.vocab_path)
    n = min(args.count, len(f))
    rows = np.linspace(0, len(f) - 1, n).round().astype(int) if args.spread else np.arange(n)

    def run(path: Path) -> tuple[np.ndarray, float]:
        backend = get_backend("onnxruntime")
        backend.load(path, threads=args.threads, batch_size=args.batch_size)
        predict(backend, f.input_ids[:4], f.input_mask[:4], f.segment_ids[:4], f.lengths[:4], batch_size=args.batch_size)
        started = time.perf_counter()
        out = predict(backend, f.input_ids[rows], f.input_mask[rows], f.segment_ids[rows], f.lengths[rows], batch_size=args.batch_size)
        return out, n / (time.perf_counter() - started)

    def f1_of(logits: np.ndarray) -> float:
        return score_logits(f, {int(r): logits[i] for i, r in enumerate(rows)}).f1

    real = f.input_mask[rows].astype(bool)
    ref, ref_speed = run(choice.path)
    ref_f1 = f1_of(ref)
    sets: dict[str, tuple[str, ...]] = {"all int8 (orch today)": ()}
    if not args.no_groups:
        sets.update({f"{role} fp32": patterns for role, patterns in ROLES.items()})
        sets.update({f"layer {i} fp32": (f"encoder.layer.{i}.*",) for i in range(args.layers)})
    for text in args.tries:
        sets[f"{text} fp32"] = tuple(p.strip() for p in text.split(",") if p.strip())
    results = {}
    with tempfile.TemporaryDirectory(prefix="orch-int8-sens-") as tmp:
        named = precision.named_copy(choice.path, Path(tmp) / "named.onnx")
        every = precision.weight_matmuls(named)
        for label, patterns in sets.items():
            nodes = precision.weight_matmuls(named, precision.KEEP_FP32 + patterns)
            out = Path(tmp) / "variant.onnx"
            quantize_dynamic(str(named), str(out), nodes_to_quantize=list(nodes), op_types_to_quantize=["MatMul"],
                             per_channel=True, weight_type=QuantType.QInt8)  # fmt: skip
            logits, speed = run(out)
            f1 = f1_of(logits)
            results[label] = {
                "int8_matmuls": f"{len(nodes)} of {len(every)}", "f1": round(f1, 3), "f1_share_of_fp32": round(f1 / ref_f1, 4),
                "logit_abs_error_mean": round(float(np.abs(logits[real] - ref[real]).mean()), 4),
                "samples_per_second": round(speed, 2), "speedup_vs_fp32": round(speed / ref_speed, 2),
            }  # fmt: skip
            print(f"{label:40s} {json.dumps(results[label])}", file=sys.stderr, flush=True)
    print(json.dumps({
        "samples": n, "spread": args.spread, "questions_scored": score_logits(f, {int(r): ref[i] for i, r in enumerate(rows)}).examples_scored,
        "fp32_f1": round(ref_f1, 3), "fp32_samples_per_second": round(ref_speed, 2), "threads": args.threads,
        "batch_size": args.batch_size, "sets": results, "load_average": list(os.getloadavg()),
        "command": "python scripts/int8_sensitivity.py " + " ".join(sys.argv[1:]),
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
