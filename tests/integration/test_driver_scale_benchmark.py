"""benchmarks/driver_scale.py runs end to end and pairs every orch run with the ceiling runs beside it.

No timing is asserted (figures vary by machine and load); what is checked is
that every orch run sits between two bare-loadgen runs, that its paired
ceiling is their mean, that the fraction the goal is read from is the one it
printed, and that every issued sample was answered.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_driver_scale_pairs_each_orch_run_with_its_neighbouring_ceilings(tmp_path):
    out = tmp_path / "scale.json"
    count, rounds = 200_000, 2
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "driver_scale.py"), "--count", str(count), "--workers", "2",
         "--rounds", str(rounds), "--skip-startup", "--json-out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads(out.read_text())
    raw = fig["raw"]

    # Per round: one ceiling run before the orch run, one after it.
    pooled = [r["samples_per_second"] for r in raw["pooled"]]
    assert len(pooled) == 2 * rounds and len(raw["orch2"]) == rounds
    paired = fig["paired_ceiling"]["2"]
    assert paired == [(pooled[2 * i] + pooled[2 * i + 1]) / 2 for i in range(rounds)]
    fractions = fig["paired_fractions"]["2"]
    rate = fig["rate"]
    for run, ceiling, fraction in zip(raw["orch2"], paired, fractions):
        assert run["issued"] == count
        assert fraction == run["samples_per_second"] / min(ceiling, 2 * rate)
    ordered = sorted(fractions)
    assert f" 2 workers: {(ordered[0] + ordered[1]) / 2:.3f} of min(paired ceiling, n*R)" in proc.stdout
