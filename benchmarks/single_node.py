"""Reference way against orch's way, on one machine, in one run.

- reference: batch size 1, every sample padded to 384, one sample at a time
  (how the MLPerf reference BERT SUT runs ONNX Runtime);
- plain loop: the same batching and padding removal in one process (no
  loadgen, no Ray), with all the threads;
- parallel loop: orch's layout without orch: --nodes processes started
  together, each with its share of the threads, each running the plain loop
  on every --nodes-th sample (longest first). orch divided by it is what
  loadgen, the dispatcher and Ray cost; its own share of the peak is what the
  model's kernels reach on this CPU whatever drives them;
- orch: `orch bench` itself in performance mode: loadgen, the pull dispatcher
  and Ray workers, batches of --batch-size, padding removed, fp32;
- orch int8 (``--int8``): the same layout with ``--precision int8`` (the method
  orch keeps; ``--int8 int8-static`` for the other);
- orch tuned (``--tuned``): `orch bench` with no layout flag at all, i.e. the
  layout `orch tune` stored for this machine (the benchmark says which).

With ``--accuracy`` it also runs orch in accuracy mode, fp32 and int8, on the
same samples and reports both F1 and the accuracy guard's verdict (int8 counts
for the 5x goal only if its F1 is >= 99% of fp32's).

All use the same model, the same SQuAD features (the whole real SQuAD dev
part beside the project, or its first --count), the same CPUs. With
--rounds R the ways run R times, interleaved, and the medians are
reported, so a slow minute of a shared machine hits all of them alike.

It also prints the compute ceiling, measured in the same run: the model's
multiply-adds per sample at 384 tokens (reference) and at the real lengths
(padding removed), and the fp32 matrix-multiply peak of this machine
(ONNX Runtime MatMul at the shape of the model's FFN). From those: how much of the
peak each way reaches, and the largest orch/reference ratio padding removal
can give at all. The goal is orch >= 3x the reference way.

    python benchmarks/single_node.py [--count N] [--rounds 1] [--nodes 2] [--batch-size 2] [--dataset PATH] [--model demo]
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
SETTLE_SECONDS = 3.0


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


def _parallel_part(model_path: str, dataset: str, vocab: str, count: int, part: int, parts: int, threads: int,
                   batch_size: int, ready, start, results) -> None:  # fmt: skip
    """One process of the parallel loop: every ``parts``-th of the samples, longest first."""
    import numpy as np

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import predict
    from orchestrator.squad.library import load_features

    features = load_features(Path(dataset), Path(vocab))
    order = np.argsort(-features.lengths[:count], kind="stable")[part::parts]
    backend = get_backend("onnxruntime")
    backend.load(Path(model_path), threads=threads, batch_size=batch_size)
    first = order[:1]
    backend.run(features.input_ids[first].astype(np.int64), features.input_mask[first].astype(np.int64),
                features.segment_ids[first].astype(np.int64))  # warm-up, as orch's workers get too
    ready.put(part)
    start.wait()
    predict(backend, features.input_ids[order], features.input_mask[order], features.segment_ids[order],
            features.lengths[order], batch_size=batch_size)
    results.put((part, len(order), time.perf_counter()))


def parallel_loop(model_path: Path, dataset: Path, vocab: Path, count: int, nodes: int, threads: int,
                  batch_size: int) -> float:  # fmt: skip
    """orch's layout without orch: ``nodes`` processes with ``threads // nodes`` threads each, started together,
    each running the plain loop on its share of the samples (no loadgen, no Ray). Returns samples/s of all.

    orch's own figure divided by this one is what loadgen, the dispatcher and Ray cost on top of the model.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = max(1, threads // nodes)
    procs = [
        ctx.Process(target=_parallel_part, args=(str(model_path), str(dataset), str(vocab), count, i, nodes, per,
                                                 batch_size, ready, start, results))  # fmt: skip
        for i in range(nodes)
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            ready.get(timeout=600)
        started = time.perf_counter()
        start.set()
        done = [results.get(timeout=3600) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    if sum(n for _, n, _ in done) != count:
        raise RuntimeError(f"the parallel loop answered {sum(n for _, n, _ in done)} of {count} samples")
    return count / (max(t for _, _, t in done) - started)


def orch_way(model: str, dataset: Path, count: int, batch_size: int | None, nodes: int | None,
             precision: str = "fp32", mode: str = "performance", *, whole: bool = False) -> dict:  # fmt: skip
    """`orch bench` (test execution, --count samples); ``nodes=None``: the stored tuned layout decides.

    An accuracy run scores the whole data set when ``whole``, else the first ``count`` samples (PARTIAL).
    """
    from orchestrator.bench.config import BenchConfig
    from orchestrator.bench.runner import run_bench

    sizing = {"count": count}
    if mode == "accuracy":
        sizing = {"count": None} if whole else {"count": count, "partial_accuracy": True}
    with tempfile.TemporaryDirectory() as tmp:
        if nodes is None:  # as `orch bench` with no layout flag: the tuned layout, if one applies
            conf = BenchConfig(mode=mode, execution="test", model=model, dataset=dataset, out=Path(tmp) / "run", tuned="auto", **sizing)
        else:
            conf = BenchConfig(
                nodes=nodes, mode=mode, execution="test", model=model,
                dataset=dataset, batch_size=batch_size, out=Path(tmp) / "run", precision=precision, **sizing,
            )  # fmt: skip
        return run_bench(conf)


def model_shape(model_path: Path) -> tuple[int, int, int]:
    """(multiply-adds per token of the model's 2-D weight MatMuls, attention layers, hidden size)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    dense = 0
    hidden = 0
    for node in graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and len(shapes.get(node.input[1], ())) == 2:
            k, n = shapes[node.input[1]]
            dense += k * n
            hidden = hidden or k
    layers = sum(1 for node in graph.node if node.op_type == "Softmax")
    return dense, layers, hidden


def macs_per_sample(length: int, dense: int, layers: int, hidden: int) -> int:
    """Multiply-adds of one sample of ``length`` tokens: weights, plus Q.K^T and P.V per layer."""
    return length * dense + layers * 2 * length * length * hidden


def matmul_peak(hidden: int, threads: int, seconds: float = 3.0) -> float:
    """fp32 GFLOP/s of ONNX Runtime's MatMul on [1536, hidden] x [hidden, 4*hidden] (the FFN's shape)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = 1536, hidden, 4 * hidden
    weight = numpy_helper.from_array(np.random.default_rng(0).random((k, n), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["y"])], "peak",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight],
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(helper.make_model(graph).SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(1).random((m, k), dtype=np.float32)
    session.run(None, {"a": a})
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, {"a": a})
        runs += 1
    return 2 * m * k * n * runs / (time.perf_counter() - started) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=None, help="the first N features (default: all of the data set)")
    parser.add_argument("--rounds", type=int, default=1, help="run the ways this many times, interleaved; medians reported")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--int8", nargs="?", const="int8", default=None, help="add orch at --precision int8 (or the method named)")
    parser.add_argument("--tuned", action="store_true", help="add orch with the layout `orch tune` stored (no layout flags)")
    parser.add_argument("--accuracy", action="store_true", help="also score fp32 and int8 on the same samples (accuracy mode)")
    args = parser.parse_args()
    if not args.dataset.exists():
        print(f"data set {args.dataset} is absent (the real SQuAD dev part lives in ../shared/data)", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("--rounds must be at least 1", file=sys.stderr)
        return 2

    import statistics

    from orchestrator.backends.batching import MAX_SEQ_LENGTH
    from orchestrator.models.resolve import resolve_model
    from orchestrator.squad.library import load_features

    choice = resolve_model(args.model, dataset=args.dataset.resolve())
    features = load_features(choice.dataset_path, choice.vocab_path)
    count = len(features) if args.count is None else min(args.count, len(features))
    threads = os.cpu_count() or 1
    lengths = features.lengths[:count]

    refs, plains, parallels, ours, int8s, tuneds = [], [], [], [], [], []
    tuned_layout = None
    for _ in range(args.rounds):
        # Let the previous way's processes (Ray's, after orch) leave the CPUs first.
        time.sleep(SETTLE_SECONDS)
        refs.append(reference_way(choice.path, features, count, threads))
        time.sleep(SETTLE_SECONDS)
        plains.append(plain_loop(choice.path, features, count, threads, args.batch_size))
        time.sleep(SETTLE_SECONDS)
        parallels.append(parallel_loop(choice.path, choice.dataset_path, choice.vocab_path, count, args.nodes, threads,
                                       args.batch_size))  # fmt: skip
        time.sleep(SETTLE_SECONDS)
        ours.append(orch_way(args.model, choice.dataset_path, count, args.batch_size, args.nodes)["samples_per_second"])
        if args.int8:
            time.sleep(SETTLE_SECONDS)
            int8s.append(orch_way(args.model, choice.dataset_path, count, args.batch_size, args.nodes, args.int8)["samples_per_second"])
        if args.tuned:
            time.sleep(SETTLE_SECONDS)
            run = orch_way(args.model, choice.dataset_path, count, None, None)
            tuneds.append(run["samples_per_second"])
            tuned_layout = {"precision": run["precision"], **{k: v for k, v in run["layout"].items() if k != "tuned"}}
    ref, plain, parallel, orch = (statistics.median(x) for x in (refs, plains, parallels, ours))
    accuracy = None
    if args.accuracy:
        whole = count == len(features)
        fp32_run = orch_way(args.model, choice.dataset_path, count, args.batch_size, args.nodes, "fp32", "accuracy", whole=whole)
        int8_run = orch_way(args.model, choice.dataset_path, count, args.batch_size, args.nodes, args.int8 or "int8", "accuracy", whole=whole)
        accuracy = {
            "fp32_f1": fp32_run["accuracy"]["f1"], "fp32_exact_match": fp32_run["accuracy"]["exact_match"],
            "int8_precision": int8_run["precision"], "int8_f1": int8_run["accuracy"]["f1"],
            "int8_exact_match": int8_run["accuracy"]["exact_match"],
            "int8_share_of_fp32_f1": round(int8_run["accuracy"]["f1"] / fp32_run["accuracy"]["f1"], 4) if fp32_run["accuracy"]["f1"] else None,
            "guard": int8_run["accuracy_target"],
        }  # fmt: skip

    dense, layers, hidden = model_shape(choice.path)
    peak = matmul_peak(hidden, threads)
    ref_macs = macs_per_sample(MAX_SEQ_LENGTH, dense, layers, hidden)
    real_macs = sum(macs_per_sample(int(n), dense, layers, hidden) for n in lengths) / count
    figures = {
        "machine": f"{platform.node()} {platform.machine()}, {threads} CPUs",
        "model": choice.name,
        "dataset": str(choice.dataset_path),
        "samples": count,
        "mean_real_length": round(float(lengths.mean()), 1),
        "rounds": args.rounds,
        "reference_samples_per_second": round(ref, 2),
        "plain_loop_samples_per_second": round(plain, 2),
        "orch_samples_per_second": round(orch, 2),
        "orch_nodes": args.nodes,
        "orch_batch_size": args.batch_size,
        "ratio": round(orch / ref, 2),
        "plain_loop_ratio": round(plain / ref, 2),
        "orch_share_of_plain_loop": round(orch / plain, 2),
        # The same layout as orch's (--nodes processes, their share of the threads each), no loadgen, no Ray:
        "parallel_loop_samples_per_second": round(parallel, 2),
        "orch_share_of_parallel_loop": round(orch / parallel, 3),
        "each_round": {
            "reference": [round(x, 2) for x in refs],
            "plain_loop": [round(x, 2) for x in plains],
            "parallel_loop": [round(x, 2) for x in parallels],
            "orch": [round(x, 2) for x in ours],
            **({"orch_int8": [round(x, 2) for x in int8s]} if int8s else {}),
            **({"orch_tuned": [round(x, 2) for x in tuneds]} if tuneds else {}),
        },
        "ceiling": {
            "matmul_peak_gflops": round(peak, 1),
            "gmacs_per_sample_padded_384": round(ref_macs / 1e9, 3),
            "gmacs_per_sample_real_lengths": round(real_macs / 1e9, 3),
            "reference_share_of_peak": round(ref * ref_macs * 2 / 1e9 / peak, 2),
            "orch_share_of_peak": round(orch * real_macs * 2 / 1e9 / peak, 2),
            # The model alone in orch's layout: what ONNX Runtime's kernels reach on this CPU, orch or not.
            "parallel_loop_share_of_peak": round(parallel * real_macs * 2 / 1e9 / peak, 2),
            # If orch's way ran at the reference's share of the peak, it could do this much better:
            "ratio_at_reference_efficiency": round(ref_macs / real_macs, 2),
            # ...and at 100% of the peak (no other op costing anything), at most this:
            "ratio_at_full_peak": round(peak * 1e9 / (2 * real_macs) / ref, 2),
        },
        **(
            {"orch_int8_samples_per_second": round(statistics.median(int8s), 2), "orch_int8_precision": args.int8,
             "int8_ratio": round(statistics.median(int8s) / ref, 2)} if int8s else {}
        ),
        **(
            {"orch_tuned_samples_per_second": round(statistics.median(tuneds), 2), "orch_tuned_layout": tuned_layout,
             "tuned_ratio": round(statistics.median(tuneds) / ref, 2)} if tuneds else {}
        ),
        "accuracy": accuracy,
        "load_average": list(os.getloadavg()),
        "goal": ">= 3x (fp32); >= 5x with int8 allowed by the guard",
        "command": "python benchmarks/single_node.py " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
