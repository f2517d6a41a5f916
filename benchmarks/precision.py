"""fp32 against orch's int8 variants (dynamic, per-token and static QDQ), side by side in one run.

For each precision: samples/s of orch's batching and padding removal in one
process (no loadgen, no Ray, so only the model differs), measured --rounds
times interleaved; EM/F1 of its answers on the same samples, scored the
official way; how far its logits are from fp32's on real tokens. This is the
measurement behind ``orchestrator.models.precision.INT8_DEFAULT`` (the faster
method at equal accuracy) and the accuracy guard's numbers in docs/performance.md.

    python benchmarks/precision.py [--count N] [--spread] [--precisions fp32,int8-per-token] [--rounds 3] [--threads 1] [--batch-size 2] [--dataset PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"
PRECISIONS = ("fp32", "int8-dynamic", "int8-per-token", "int8-static")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=None, help="the first N features (default: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (orch's fastest local layout runs 1 per worker)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated, fp32 first (the reference)")
    parser.add_argument("--spread", action="store_true", help="--count features spread evenly over the data set, not the first ones")
    args = parser.parse_args()
    precisions = tuple(args.precisions.split(","))
    if precisions[0] != "fp32":
        parser.error("--precisions must start with fp32 (the reference)")
    if not args.dataset.exists():
        print(f"data set {args.dataset} is absent (the real SQuAD dev part lives in ../shared/data)", file=sys.stderr)
        return 2

    import numpy as np

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import predict
    from orchestrator.models.precision import prepare_variant
    from orchestrator.models.resolve import resolve_model
    from orchestrator.squad.accuracy import score_logits
    from orchestrator.squad.library import load_features

    choice = resolve_model(args.model, dataset=args.dataset.resolve())
    features = load_features(choice.dataset_path, choice.vocab_path)
    n = len(features) if args.count is None else min(args.count, len(features))
    # The first features of the shared SQuAD part are all one article; --spread takes them over the whole part.
    picked = np.linspace(0, len(features) - 1, n).round().astype(int) if args.spread else np.arange(n)
    built = {}
    for name in precisions:
        started = time.perf_counter()
        built[name] = (prepare_variant(choice.path, name, features=features), time.perf_counter() - started)

    f = features
    backends = {}
    for name, (variant, _) in built.items():
        backend = get_backend("onnxruntime")
        backend.load(variant.path, threads=args.threads, batch_size=args.batch_size)
        backends[name] = backend
    speeds: dict[str, list[float]] = {name: [] for name in precisions}
    logits = {}
    for _ in range(args.rounds):
        for name, backend in backends.items():
            predict(backend, f.input_ids[:4], f.input_mask[:4], f.segment_ids[:4], f.lengths[:4], batch_size=args.batch_size)
            started = time.perf_counter()
            out = predict(backend, f.input_ids[picked], f.input_mask[picked], f.segment_ids[picked], f.lengths[picked], batch_size=args.batch_size)
            speeds[name].append(n / (time.perf_counter() - started))
            logits[name] = out

    real = f.input_mask[picked].astype(bool)
    ref = logits["fp32"]
    spread = float(ref[real].std())
    rows = {}
    for name in precisions:
        score = score_logits(features, {int(r): logits[name][i] for i, r in enumerate(picked)})
        diff = np.abs(logits[name][real] - ref[real])
        rows[name] = {
            "samples_per_second": round(statistics.median(speeds[name]), 2),
            "each_round": [round(x, 2) for x in speeds[name]],
            "speedup_vs_fp32": round(statistics.median(speeds[name]) / statistics.median(speeds["fp32"]), 2),
            "exact_match": round(score.exact_match, 3),
            "f1": round(score.f1, 3),
            "f1_share_of_fp32": None,
            "logit_abs_error_mean": round(float(diff.mean()), 4),
            "logit_abs_error_max": round(float(diff.max()), 4),
            "variant_build_seconds": round(built[name][1], 1),
            "model_file": built[name][0].path.name,
        }
    for name in precisions:
        rows[name]["f1_share_of_fp32"] = round(rows[name]["f1"] / rows["fp32"]["f1"], 4) if rows["fp32"]["f1"] else None
    print(json.dumps({
        "model": choice.name, "dataset": str(choice.dataset_path), "samples": n, "spread": args.spread,
        "questions_scored": score.examples_scored, "threads": args.threads, "batch_size": args.batch_size,
        "rounds": args.rounds, "fp32_logit_spread": round(spread, 4), "precisions": rows,
        "load_average": list(os.getloadavg()),
        "command": "python benchmarks/precision.py " + " ".join(sys.argv[1:]),
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
