"""deepsparse against onnxruntime on the CPU: same model, same data, same settings, one run each.

Both backends run ``orchestrator.backends.batching.predict`` (padding removal
on, samples sorted by length, batches of --batch-size) over the first --count
features of the real SQuAD dev part beside the project, with the same
--threads. Engine compilation (deepsparse compiles one engine per length
bucket, here all of them at load) and one warm-up batch per bucket are kept
out of the timed pass and reported apart. Prints samples/s of each and the
ratio deepsparse / onnxruntime, and with --json the whole record. With
--rounds N each backend is timed N times, the order alternating, and the
medians are compared (on a shared machine single passes vary a lot).

Run it where both are importable: an ``orch[deepsparse]`` environment
(deepsparse 1.8 needs CPython <= 3.11 and numpy < 2). ``orch[deepsparse]``
brings onnxruntime too (deepsparse -> sparsezoo -> onnxruntime); if yours
lacks it, ``pip install onnxruntime`` there.

    /work/venv-ds/bin/python benchmarks/backends.py [--count 400] [--batch-size 8] [--threads 2] [--model demo]
        [--sparsity 0.8]   # a magnitude-pruned copy of the model: what sparse kernels gain
        [--rounds 3]       # alternate the backends 3 times, compare medians
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"
BACKENDS = ("onnxruntime", "deepsparse")


def load(name: str, model_path: Path, batch_size: int, threads: int) -> dict:
    """Load one backend and warm up every bucket (deepsparse compiles them all here)."""
    import numpy as np

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import BUCKETS

    backend = get_backend(name)
    if name == "deepsparse":
        backend.eager = True  # compile every bucket now, not inside a timed pass
    started = time.perf_counter()
    backend.load(model_path, threads=threads, batch_size=batch_size)
    load_seconds = time.perf_counter() - started
    # One full batch per bucket, so neither backend meets a new shape while timed.
    started = time.perf_counter()
    for bucket in BUCKETS:
        rows = np.zeros((batch_size, bucket), np.int64)
        backend.run(rows, rows, rows)
    return {"backend": backend, "load_seconds": load_seconds, "warmup_seconds": time.perf_counter() - started}


def timed_pass(backend, features, count: int, batch_size: int):
    """(seconds, logits) of one ``predict`` pass over the first ``count`` features, padding removal on."""
    from orchestrator.backends.batching import predict

    arrays = (a[:count] for a in (features.input_ids, features.input_mask, features.segment_ids, features.lengths))
    started = time.perf_counter()
    logits = predict(backend, *arrays, batch_size=batch_size, remove_padding=True)
    return time.perf_counter() - started, logits


def measure(model_path: Path, features, count: int, batch_size: int, threads: int, rounds: int) -> tuple[list[dict], list[float], float]:
    """Both backends loaded, then ``rounds`` timed passes each, the order alternating per round.

    Alternating keeps a drift in the machine's load (a shared machine) from
    favouring one backend. Returns (per-backend records, per-round ratios,
    the largest logit difference on real tokens between the two).
    """
    import numpy as np

    loaded = {name: load(name, model_path, batch_size, threads) for name in BACKENDS}
    seconds: dict[str, list[float]] = {name: [] for name in BACKENDS}
    logits = {}
    for r in range(rounds):
        for name in BACKENDS if r % 2 == 0 else BACKENDS[::-1]:
            took, out = timed_pass(loaded[name]["backend"], features, count, batch_size)
            seconds[name].append(took)
            logits.setdefault(name, out)
    runs = []
    for name in BACKENDS:
        rates = [count / t for t in seconds[name]]
        runs.append({
            "backend": name,
            "samples": int(count),
            "rounds": rounds,
            "samples_per_second": round(float(np.median(rates)), 3),
            "samples_per_second_each_round": [round(x, 3) for x in rates],
            "load_seconds": round(loaded[name]["load_seconds"], 3),
            "warmup_seconds": round(loaded[name]["warmup_seconds"], 3),
            "device": loaded[name]["backend"].device_info(),
        })
    ratios = [round(o / d, 3) for o, d in zip(seconds["onnxruntime"], seconds["deepsparse"])]
    real = np.arange(384)[None, :] < features.lengths[:count, None]
    max_diff = float(np.abs(logits["onnxruntime"] - logits["deepsparse"])[real].max())
    return runs, ratios, max_diff


def pruned_copy(model_path: Path, sparsity: float, folder: Path) -> Path:
    """A magnitude-pruned copy of the model in ``folder`` (see ``deepsparse_graph.magnitude_prune``)."""
    import onnx

    from orchestrator.backends.deepsparse_graph import load_model, magnitude_prune

    model = load_model(model_path)
    magnitude_prune(model, sparsity)
    out = folder / f"{model_path.stem}-sparse{round(sparsity * 100)}.onnx"
    onnx.save_model(model, str(out))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400, help="features to run (the first N of the data set)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--vocab", type=Path, default=None, help="vocab.txt (default: the model's; needed for a model given by path)")
    parser.add_argument("--sparsity", type=float, default=0.0,
                        help="magnitude-prune the model's MatMul weights to this fraction of zeros first (answers become meaningless; shows sparse speed)")
    parser.add_argument("--rounds", type=int, default=1, help="timed passes per backend, alternating which goes first (default 1: one run)")
    parser.add_argument("--json", action="store_true", help="print the whole record as JSON")
    args = parser.parse_args()
    if not args.dataset.exists():
        print(f"data set {args.dataset} is absent (the real SQuAD dev part lives in ../shared/data)", file=sys.stderr)
        return 2
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from orchestrator.errors import OrchError
    from orchestrator.models.resolve import resolve_model
    from orchestrator.squad.library import load_features

    try:
        choice = resolve_model(args.model, vocab=args.vocab, dataset=args.dataset.resolve())
        features = load_features(choice.dataset_path, choice.vocab_path)
        count = min(args.count, len(features))
        with tempfile.TemporaryDirectory(prefix="orch-bench-backends-") as tmp:
            model_path = pruned_copy(choice.path, args.sparsity, Path(tmp)) if args.sparsity else choice.path
            runs, ratios, max_diff = measure(model_path, features, count, args.batch_size, args.threads, args.rounds)
    except OrchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ort, ds = runs
    record = {
        "model": choice.name,
        "model_path": str(choice.path),
        "dataset": str(choice.dataset_path),
        "count": count,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "sparsity": args.sparsity,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "ratio_deepsparse_over_onnxruntime": round(ds["samples_per_second"] / ort["samples_per_second"], 3),
        "ratio_each_round": ratios,
        # Same answers, or the speed comparison means nothing.
        "max_abs_logit_diff": max_diff,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    sparse = f" pruned to {args.sparsity:.0%} zeros" if args.sparsity else ""
    print(f"model {choice.name}{sparse}, {count} features of {choice.dataset_path.name}, batch {args.batch_size}, threads {args.threads}, padding removal on")
    each = " (median of %d rounds)" % args.rounds if args.rounds > 1 else ""
    for run in runs:
        rounds = ", ".join(f"{x:.1f}" for x in run["samples_per_second_each_round"])
        print(f"  {run['backend']:<12} {run['samples_per_second']:8.2f} samples/s{each}  [{rounds}]  load {run['load_seconds']:.1f} s, warm-up {run['warmup_seconds']:.1f} s")
    print(f"  deepsparse / onnxruntime = {record['ratio_deepsparse_over_onnxruntime']:.2f}x  per round {ratios}  (max |logit diff| on real tokens {max_diff:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
