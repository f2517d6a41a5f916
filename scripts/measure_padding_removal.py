"""Measure the demo model: build time (cold, cached) and CPU samples/s with and without padding removal.

Usage: python scripts/measure_padding_removal.py [--samples 256] [--threads 2]
Lengths are synthetic (uniform 100..384), the token ids random; the figures are for
the report, not a benchmark result.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["ORCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="orch-measure-")

    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import MAX_SEQ_LENGTH, predict
    from orchestrator.models.demo import demo_model_path

    t = time.perf_counter()
    path = demo_model_path()
    cold = time.perf_counter() - t
    t = time.perf_counter()
    demo_model_path()
    cached = time.perf_counter() - t
    print(f"demo model build: cold {cold:.2f} s, cached {cached * 1000:.0f} ms ({path.stat().st_size / 1e6:.1f} MB)")

    rng = np.random.default_rng(0)
    n = args.samples
    lengths = rng.integers(100, MAX_SEQ_LENGTH + 1, size=n).astype(np.int32)
    positions = np.arange(MAX_SEQ_LENGTH)[None, :]
    mask = (positions < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1996, 29000, size=(n, MAX_SEQ_LENGTH)).astype(np.int32) * mask
    seg = ((positions >= 20) * mask).astype(np.int32)

    backend = get_backend("onnxruntime")
    backend.load(path, threads=args.threads)
    print(f"{n} samples, lengths 100..384 (mean {lengths.mean():.0f}), {args.threads} intra-op threads")
    for batch_size, remove in ((1, False), (8, False), (1, True), (8, True)):
        predict(backend, ids[:8], mask[:8], seg[:8], lengths[:8], batch_size=batch_size, remove_padding=remove)  # warm-up
        t = time.perf_counter()
        predict(backend, ids, mask, seg, lengths, batch_size=batch_size, remove_padding=remove)
        seconds = time.perf_counter() - t
        label = "padding removed" if remove else "padded to 384"
        print(f"batch {batch_size}, {label:15s}: {n / seconds:7.1f} samples/s")


if __name__ == "__main__":
    main()
