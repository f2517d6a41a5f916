"""benchmarks/single_node.py runs end to end and its arithmetic is right.

No timing is asserted (figures vary by machine); what is checked is that the
benchmark runs all its ways on the same samples, reports the ratio of the
figures it printed, and counts the demo model's work correctly.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

from orchestrator.models.demo import load_head

# The demo model: 6 layers, hidden 384, FFN 1536, and its fitted QA head ([width, 2] over
# several layers' states and a window of tokens: see orchestrator/data/demo_qa_head.npz).
LAYERS, HIDDEN, FFN = 6, 384, 1536
HEAD_WIDTH = load_head().weight.shape[1]
DENSE_PER_TOKEN = LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN) + HEAD_WIDTH * 2


def test_single_node_benchmark_runs_and_counts_the_model(squad_part):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "single_node.py"), "--count", "24", "--nodes", "2",
         "--batch-size", "2", "--rounds", "2", "--dataset", str(squad_part)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)

    assert figures["samples"] == 24 and figures["rounds"] == 2 and figures["orch_nodes"] == 2
    for way in ("reference", "plain_loop", "parallel_loop", "orch"):
        assert len(figures["each_round"][way]) == 2 and all(x > 0 for x in figures["each_round"][way])
    assert abs(figures["ratio"] - figures["orch_samples_per_second"] / figures["reference_samples_per_second"]) < 0.02
    assert abs(figures["orch_share_of_parallel_loop"]
               - figures["orch_samples_per_second"] / figures["parallel_loop_samples_per_second"]) < 0.002

    ceiling = figures["ceiling"]
    padded = 384 * DENSE_PER_TOKEN + LAYERS * 2 * 384 * 384 * HIDDEN
    assert ceiling["gmacs_per_sample_padded_384"] == round(padded / 1e9, 3)
    assert 0 < ceiling["gmacs_per_sample_real_lengths"] < ceiling["gmacs_per_sample_padded_384"]
    assert ceiling["matmul_peak_gflops"] > 0
    assert ceiling["parallel_loop_share_of_peak"] > 0


def test_single_node_benchmark_int8_line_and_accuracy(squad_part):
    """--int8 --accuracy: the int8 way is measured, and fp32 and int8 are scored with the guard's verdict."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "single_node.py"), "--count", "16", "--nodes", "1",
         "--batch-size", "2", "--int8", "--accuracy", "--dataset", str(squad_part)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(proc.stdout)
    assert figures["orch_int8_samples_per_second"] > 0
    accuracy = figures["accuracy"]
    assert accuracy["int8_precision"] == "int8-per-token"
    assert accuracy["fp32_f1"] is not None and accuracy["int8_f1"] is not None
    assert accuracy["int8_share_of_fp32_f1"] == round(accuracy["int8_f1"] / accuracy["fp32_f1"], 4)
    assert accuracy["guard"]
