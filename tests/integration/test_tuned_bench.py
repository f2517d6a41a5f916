"""`orch bench` with a stored tuned layout: used and announced, overridden by flags, ignored when the data changed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from orchestrator.bench.config import BenchConfig
from orchestrator.bench.inputs import resolve_inputs
from orchestrator.tune import apply, layout


def _orch(env, *args):
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "bench", "--json", "--count", "16", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def test_bench_uses_overrides_and_ignores_the_tuned_layout(tmp_path, monkeypatch):
    env = {"ORCH_CACHE_DIR": str(tmp_path / "cache")}
    monkeypatch.setenv("ORCH_CACHE_DIR", env["ORCH_CACHE_DIR"])
    probe = BenchConfig(tuned="auto")
    identity, _, hardware = apply.identity_for(probe, resolve_inputs(probe))
    best = layout.Layout(workers=2, threads=1, batch_size=2, chunk_size=4, precision="fp32", backend="onnxruntime")
    path = layout.store_tuned(identity, best, 99.0, count=600, tried=[], command="orch tune", hardware=hardware)

    run, err = _orch(env, "--out", str(tmp_path / "a"))
    assert run["layout"]["source"] == "tuned" and run["workers"] == 2 and run["layout"]["batch_size"] == 2
    assert run["layout"]["chunk_size"] == 4 and run["layout"]["threads"] == [1]
    assert f"orch: using the tuned layout 2w x 1t b2 c4 fp32 onnxruntime" in err and str(path) in err

    run, err = _orch(env, "--out", str(tmp_path / "b"), "--batch-size", "3", "--nodes", "1")
    assert run["workers"] == 1 and run["layout"]["batch_size"] == 3 and run["layout"]["chunk_size"] == 4
    assert "overridden by --batch-size, --nodes" in err

    run, err = _orch(env, "--out", str(tmp_path / "c"), "--no-tuned")
    assert run["layout"]["source"] == "flags and defaults" and run["workers"] == 1 and run["layout"]["batch_size"] == 8

    layout.store_tuned(dataclasses.replace(identity, features_key="0" * 64), best, 99.0, count=600, tried=[], command="orch tune")
    run, err = _orch(env, "--out", str(tmp_path / "d"))
    assert run["layout"]["source"] == "flags and defaults" and run["workers"] == 1
    assert "is ignored: the data changed" in err and "run `orch tune` again" in err
