"""A tiny real `orch tune` (real trials: Ray, loadgen, onnxruntime), then `orch bench` runs what it stored.

Small on purpose (16 samples a trial, two batch sizes, fp32 and int8-dynamic
on 16 accuracy samples): it checks the plumbing, not which layout is fastest.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.cli import orch

TUNE = ("tune", "--count", "16", "--accuracy-count", "16", "--precisions", "fp32,int8-dynamic",
        "--backends", "onnxruntime", "--batch-sizes", "1,2", "--chunk-sizes", "default")  # fmt: skip


def test_tune_stores_the_best_layout_and_bench_uses_it_unless_a_flag_says_otherwise(tmp_path):
    env = {"ORCH_CACHE_DIR": str(tmp_path / "cache")}
    proc = orch(*TUNE, "--json", env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout holds the one JSON object, nothing else
    trials = result["trials"]
    measured = [t for t in trials if t["samples_per_second"]]
    assert measured and all(t["error"] is None for t in measured)
    assert {t["stage"] for t in trials} >= {"precision x backend", "workers x threads"}
    # The guard judged int8-dynamic against the fp32 F1 on the same 16 samples before it was measured (or refused it).
    int8 = [t for t in trials if t["layout"]["precision"] == "int8-dynamic"]
    assert int8 and int8[0]["accuracy"]["reference_f1"] is not None and int8[0]["accuracy"]["precision"] == "int8-dynamic"
    if int8[0]["accuracy"]["meets"] is None:
        assert int8[0]["samples_per_second"] is None and "accuracy guard" in int8[0]["error"]
    best = result["best"]
    assert best["samples_per_second"] == max(t["samples_per_second"] for t in measured)
    stored = json.loads(Path(result["stored"]).read_text())
    assert stored["layout"] == best["layout"] and stored["command"].startswith("orch tune")
    assert f"{best['label']}" in proc.stderr and "precision x backend" in proc.stderr  # a line per trial, as it ran

    proc = orch("bench", "--json", "--count", "16", "--out", str(tmp_path / "a"), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout)
    lay = best["layout"]
    assert run["layout"]["source"] == "tuned" and run["workers"] == lay["workers"]
    assert run["layout"]["batch_size"] == lay["batch_size"] and run["precision"] == lay["precision"]
    assert f"orch: using the tuned layout {best['label']}" in proc.stderr and result["stored"] in proc.stderr

    other = 3 - lay["batch_size"]  # 1 <-> 2
    proc = orch("bench", "--json", "--count", "16", "--batch-size", str(other), "--out", str(tmp_path / "b"), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout)
    assert run["layout"]["batch_size"] == other and run["workers"] == lay["workers"]
    assert "overridden by --batch-size" in proc.stderr
