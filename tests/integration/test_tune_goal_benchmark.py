"""benchmarks/tune_goal.py runs end to end: both searches, then orch bench with each choice.

No timing is asserted (16-sample trials on a shared machine say nothing
about the goal); what is checked is that the pruned search measured fewer
layouts than the whole grid, that the tuned default really ran the tuned
layout and the full-sweep best ran the full grid's best, and that the ratio
the benchmark prints is the one of the medians it recorded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_tune_goal_benchmark_compares_the_tuned_default_with_the_full_sweeps_best(tmp_path):
    out = tmp_path / "goal.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "tune_goal.py"), "--dataset", str(ROOT / "orchestrator" / "data" / "demo_squad.json"),
         "--count", "16", "--accuracy-count", "16", "--precisions", "fp32", "--batch-sizes", "1,2",
         "--bench-count", "16", "--rounds", "1", "--cache-dir", str(tmp_path / "cache"), "--json-out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    fig = json.loads(out.read_text())

    pruned, full = fig["pruned"], fig["full"]
    assert 0 < len(pruned["trials"]) < len(full["trials"])
    assert all(t["error"] is None and t["samples_per_second"] > 0 for t in pruned["trials"] + full["trials"])
    assert full["best"]["samples_per_second"] == max(t["samples_per_second"] for t in full["trials"])

    bench = fig["bench"]
    tuned, best, untuned = bench["tuned default"], bench["full-sweep best"], bench["untuned default"]
    assert tuned["layout"]["source"] == "tuned" and tuned["layout"]["tuned"] == pruned["best"]["layout"]
    assert "--no-tuned" in best["command"] and "--no-tuned" in untuned["command"]
    layout = full["best"]["layout"]
    for flag, key in (("--nodes", "workers"), ("--threads", "threads"), ("--batch-size", "batch_size")):
        assert f"{flag} {layout[key]}" in best["command"]
    for run in (tuned, best, untuned):
        assert len(run["rounds"]) == 1 and run["median"] == run["rounds"][0] > 0
    # The medians are recorded rounded to 0.01 samples/s; the ratio is from the unrounded ones.
    assert abs(fig["ratio_tuned_to_full_best"] - tuned["median"] / best["median"]) < 0.01
    assert fig["met"] == (fig["ratio_tuned_to_full_best"] >= fig["goal"])
    printed = re.search(r"tuned default / full-sweep best: ([0-9.]+) \(goal >= 0.95\): (met|NOT met)", proc.stdout)
    assert printed and abs(float(printed.group(1)) - fig["ratio_tuned_to_full_best"]) <= 0.0006
    assert (printed.group(2) == "met") == fig["met"]
