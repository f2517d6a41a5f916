"""What recording the timeline costs the driver, per chunk, next to the driver's own per-chunk work.

For each chunk size, in one run: the time to record a chunk (its ``submit``
and ``done`` records, lengths summarised, written and flushed to a real
file), and, side by side, the time the driver already spends per chunk in
performance mode building loadgen's responses (``QuerySampleResponse`` per
sample, as ``harness.complete_chunk`` does; ``QuerySamplesComplete`` itself
needs a running loadgen test and is left out, so the ratio is an upper
bound). Sample indices are timed as tuples (today's ``Chunk``) and as numpy
arrays. Then the size of the file per chunk, and the time ``orch report``
takes on a timeline of ``--report-chunks`` chunks (read, analyse, draw,
write). Prints one JSON object.

    python benchmarks/timeline_cost.py [--chunks 20000] [--report-chunks 30000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.bench.dispatcher import Chunk, ChunkResult  # noqa: E402
from orchestrator.bench.timeline import TIMELINE_FILE, TimelineRecorder  # noqa: E402

WORKERS = [{"name": f"node{i}", "node": f"node{i}", "cpus": 16.0} for i in range(1, 5)]


def record_cost(folder: Path, chunks: list[Chunk], lengths: np.ndarray) -> tuple[float, int]:
    """Seconds per chunk to record submit + done, and bytes written per chunk."""
    path = folder / f"t{len(chunks[0])}-{type(chunks[0].sample_indices).__name__}.jsonl"
    rec = TimelineRecorder(path, workers=WORKERS, lengths=lengths)
    now = time.time()
    result = ChunkResult(0, None, 0.5, started=now, finished=now + 0.5)
    started = time.perf_counter()
    for i, chunk in enumerate(chunks):
        worker = WORKERS[i % 4]["name"]
        rec.submitted(chunk, worker)
        rec.completed(chunk, result, worker)
    seconds = time.perf_counter() - started
    rec.close()
    return seconds / len(chunks), path.stat().st_size // len(chunks)


def response_cost(chunks: list[Chunk]) -> float | None:
    """Seconds per chunk to build its loadgen responses (performance mode), or None without loadgen."""
    try:
        import mlperf_loadgen as lg
    except ImportError:
        return None
    started = time.perf_counter()
    for chunk in chunks:
        responses = [lg.QuerySampleResponse(q, 0, 0) for q in chunk.query_ids]
    del responses
    return (time.perf_counter() - started) / len(chunks)


def report_cost(folder: Path, n: int) -> dict:
    """Wall seconds of `orch report` on a synthetic run of ``n`` chunks on 4 workers."""
    run = folder / "big"
    run.mkdir()
    t0 = 1_800_000_000.0
    lines = [json.dumps({"format": "orch-timeline", "version": 1, "t0": t0, "workers": WORKERS})]
    rng = np.random.default_rng(0)
    clock = {w["name"]: 0.0 for w in WORKERS}
    lines.append(json.dumps({"e": "loadgen_start", "t": 0.0}))
    for c in range(n):
        worker = WORKERS[c % 4]["name"]
        busy = float(rng.uniform(0.02, 0.04))
        start, clock[worker] = clock[worker], clock[worker] + busy
        mean = round(384 - 300 * c / n, 1)
        lines.append(json.dumps({"e": "submit", "t": max(0.0, start - 0.03), "c": c, "w": worker}))
        lines.append(json.dumps({"e": "done", "t": clock[worker] + 0.001, "c": c, "w": worker, "start": start,
                                 "end": clock[worker], "busy": busy, "n": 6000, "len": [int(mean) - 3, mean, int(mean) + 3]}))
    lines.append(json.dumps({"e": "loadgen_end", "t": max(clock.values()) + 0.1}))
    lines.append(json.dumps({"e": "end", "t": max(clock.values()) + 0.2, "ok": True, "error": None}))
    (run / TIMELINE_FILE).write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(run)], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return {"chunks": n, "seconds": round(seconds, 2), "timeline_mb": round((run / TIMELINE_FILE).stat().st_size / 1e6, 2),
            "report_html_mb": round((run / "report.html").stat().st_size / 1e6, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20000, help="chunks recorded per measurement")
    parser.add_argument("--report-chunks", type=int, default=30000, help="chunks of the synthetic run given to orch report")
    args = parser.parse_args()
    lengths = np.random.default_rng(1).integers(20, 385, 200_000)
    figures: dict = {"command": "python benchmarks/timeline_cost.py " + " ".join(sys.argv[1:]),
                     "load_before": os.getloadavg(), "per_chunk": []}
    with tempfile.TemporaryDirectory(prefix="orch-timeline-cost-") as tmp:
        for size in (32, 6000):
            count = max(200, args.chunks * 32 // size)
            idx = [np.arange(i * size, (i + 1) * size) % len(lengths) for i in range(count)]
            as_tuples = [Chunk(i, tuple(range(i * size, (i + 1) * size)), tuple(int(s) for s in part)) for i, part in enumerate(idx)]
            as_arrays = [Chunk(i, np.arange(i * size, (i + 1) * size, dtype=np.uint64), part) for i, part in enumerate(idx)]
            rec_tuple, size_tuple = record_cost(Path(tmp), as_tuples, lengths)
            rec_array, _ = record_cost(Path(tmp), as_arrays, lengths)
            responses = response_cost(as_tuples)
            figures["per_chunk"].append({
                "chunk_size": size, "chunks": count,
                "record_us_tuple_indices": round(rec_tuple * 1e6, 1),
                "record_us_numpy_indices": round(rec_array * 1e6, 1),
                "loadgen_responses_us": None if responses is None else round(responses * 1e6, 1),
                "record_over_responses": None if not responses else round(rec_tuple / responses, 3),
                "bytes_per_chunk": size_tuple,
            })
        figures["report"] = report_cost(Path(tmp), args.report_chunks)
    figures["load_after"] = os.getloadavg()
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
