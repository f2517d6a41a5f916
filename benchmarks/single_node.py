"""Reference way against orch's way, on one machine, in one run.

- reference: batch size 1, every sample padded to 384, one sample at a time
  (how the MLPerf reference BERT SUT runs ONNX Runtime);
- plain loop: the same batching and padding removal in one process (no
  loadgen, no Ray): the ceiling of orch's way, to show what the dispatcher costs;
- orch: `orch bench` itself in performance mode: loadgen, the pull dispatcher
  and Ray workers, batches of --batch-size, padding removed.

Both use the same model, the same SQuAD features (the first --count of the
real SQuAD dev part beside the project), the same CPUs. Prints both figures
and the ratio; the goal is orch >= 3x the reference way.

    python benchmarks/single_node.py [--count 400] [--batch-size 8] [--dataset PATH] [--model demo]
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


def reference_way(model_path: Path, features, count: int, threads: int) -> float:
    """Batch 1, padded to 384, one sample after the other; returns samples/s."""
    import numpy as np

    from orchestrator.backends import get_backend

    backend = get_backend("onnxruntime")
    backend.load(model_path, threads=threads, batch_size=1)
    ids = features.input_ids.astype(np.int64)
    mask = features.input_mask.astype(np.int64)
    seg = features.segment_ids.astype(np.int64)
    backend.run(ids[:1], mask[:1], seg[:1])  # warm-up, as loadgen's runs get too
    started = time.perf_counter()
    for i in range(count):
        start, end = backend.run(ids[i : i + 1], mask[i : i + 1], seg[i : i + 1])
        np.stack([start, end], axis=-1)  # the (384, 2) answer the reference returns
    return count / (time.perf_counter() - started)


def plain_loop(model_path: Path, features, count: int, threads: int, batch_size: int) -> float:
    """The same batching and padding removal in one process, no loadgen, no Ray: the ceiling orch's way can reach."""
    import numpy as np

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import predict

    backend = get_backend("onnxruntime")
    backend.load(model_path, threads=threads, batch_size=batch_size)
    order = np.argsort(-features.lengths[:count], kind="stable")
    started = time.perf_counter()
    predict(backend, features.input_ids[order], features.input_mask[order], features.segment_ids[order],
            features.lengths[order], batch_size=batch_size)
    return count / (time.perf_counter() - started)


def orch_way(model: str, dataset: Path, count: int, batch_size: int, nodes: int) -> dict:
    """`orch bench` in performance mode (test execution, --count samples)."""
    from orchestrator.bench.config import BenchConfig
    from orchestrator.bench.runner import run_bench

    with tempfile.TemporaryDirectory() as tmp:
        conf = BenchConfig(
            nodes=nodes, mode="performance", execution="test", count=count, model=model,
            dataset=dataset, batch_size=batch_size, out=Path(tmp) / "run",
        )
        return run_bench(conf)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    args = parser.parse_args()
    if not args.dataset.exists():
        print(f"data set {args.dataset} is absent (the real SQuAD dev part lives in ../shared/data)", file=sys.stderr)
        return 2

    from orchestrator.models.resolve import resolve_model
    from orchestrator.squad.library import load_features

    choice = resolve_model(args.model, dataset=args.dataset.resolve())
    features = load_features(choice.dataset_path, choice.vocab_path)
    count = min(args.count, len(features))
    threads = os.cpu_count() or 1
    lengths = features.lengths[:count]

    ref = reference_way(choice.path, features, count, threads)
    plain = plain_loop(choice.path, features, count, threads, args.batch_size)
    result = orch_way(args.model, choice.dataset_path, count, args.batch_size, args.nodes)
    ours = result["samples_per_second"]
    figures = {
        "machine": f"{platform.node()} {platform.machine()}, {threads} CPUs",
        "model": choice.name,
        "dataset": str(choice.dataset_path),
        "samples": count,
        "mean_real_length": round(float(lengths.mean()), 1),
        "reference_samples_per_second": round(ref, 2),
        "plain_loop_samples_per_second": round(plain, 2),
        "orch_samples_per_second": round(ours, 2),
        "orch_nodes": args.nodes,
        "orch_batch_size": args.batch_size,
        "ratio": round(ours / ref, 2),
        "plain_loop_ratio": round(plain / ref, 2),
        "orch_share_of_plain_loop": round(ours / plain, 2),
        "goal": ">= 3x",
        "command": "python benchmarks/single_node.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
