"""`orch tune`'s pruned search against the whole grid, then `orch bench` with each choice, side by side.

Issue 15's goal: `orch bench` with its tuned default reaches at least 95% of
the best layout a full sweep finds. In one run, on one machine, with one orch
cache (so the models and variants are built once):

1. ``orch tune --json`` (the pruned search): its trials, its best layout, its
   wall time; the stored tuned record is kept aside;
2. ``orch tune --full --json`` (the whole grid): the same;
3. the pruned search's record is put back where `orch bench` looks for it, then
   ``--rounds`` interleaved rounds of, on the same ``--bench-count`` samples:
   - tuned default: ``orch bench`` with no layout flag (it must say it used the
     tuned layout, or the benchmark stops);
   - full-sweep best: ``orch bench --no-tuned`` with every layout flag of the
     full grid's best trial;
   - untuned default: ``orch bench --no-tuned`` (orch's built-in defaults).

Trials of a sweep are short (``--count`` samples each), so the two sweeps'
best figures are noisy; the goal is read from step 3, where both layouts run
on the same, longer query. Every `orch` command run is printed.

    python benchmarks/tune_goal.py [--count 600] [--accuracy-count 500] [--bench-count N] [--rounds 3] [--json-out F]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"
GOAL = 0.95


def orch(args: list[str], env: dict[str, str]) -> tuple[dict, float, str]:
    """Run one orch command with --json; its JSON object, wall seconds and stderr (exits on failure)."""
    command = [sys.executable, "-m", "orchestrator", *args, "--json"]
    print("$ orch " + shlex.join(args + ["--json"]), file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"tune_goal: `orch {shlex.join(args)}` failed (exit {done.returncode})")
    return json.loads(done.stdout), seconds, done.stderr


def layout_flags(layout: dict) -> list[str]:
    from orchestrator.tune.layout import FLAGS  # layout field -> the bench flag that sets it

    out = []
    for field, flag in FLAGS.items():
        if layout.get(field) is not None:
            out += [flag, str(layout[field])]
    return out


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--count", type=int, default=600, help="samples per tune trial (orch tune --count)")
    parser.add_argument("--accuracy-count", type=int, default=500, help="samples of the accuracy guard's runs")
    parser.add_argument("--precisions", default=None, help="orch tune --precisions (default: orch tune's)")
    parser.add_argument("--batch-sizes", default=None, help="orch tune --batch-sizes (default: orch tune's)")
    parser.add_argument("--chunk-sizes", default=None, help="orch tune --chunk-sizes (default: orch tune's)")
    parser.add_argument("--bench-count", type=int, default=None, help="samples of each bench in step 3 (default: the whole data set)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None, help="ORCH_CACHE_DIR for the run (default: a fresh temporary one)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    if not args.dataset.exists():
        print(f"data set {args.dataset} is absent (the real SQuAD dev part lives in ../shared/data)", file=sys.stderr)
        return 2

    tmp = tempfile.TemporaryDirectory(prefix="orch-tune-goal-")
    cache = args.cache_dir or Path(tmp.name) / "cache"
    env = {**os.environ, "ORCH_CACHE_DIR": str(cache)}
    common = ["--model", args.model, "--dataset", str(args.dataset)]
    tune_args = ["tune", *common, "--count", str(args.count), "--accuracy-count", str(args.accuracy_count)]
    for flag, value in (("--precisions", args.precisions), ("--batch-sizes", args.batch_sizes), ("--chunk-sizes", args.chunk_sizes)):
        if value:
            tune_args += [flag, value]
    loads = {"start": load()}

    pruned, pruned_s, _ = orch(tune_args, env)
    stored = Path(pruned["stored"])
    pruned_record = stored.read_bytes()
    loads["after pruned"] = load()
    full, full_s, _ = orch(tune_args + ["--full"], env)
    loads["after full"] = load()
    stored.write_bytes(pruned_record)  # what a user has after `orch tune`

    if args.bench_count is None:
        from orchestrator.models.resolve import resolve_model
        from orchestrator.squad.library import load_features

        choice = resolve_model(args.model, dataset=args.dataset.resolve())
        args.bench_count = len(load_features(choice.dataset_path, choice.vocab_path))
    out_dir = Path(tmp.name) / "run"
    bench = ["bench", *common, "--count", str(args.bench_count), "--out", str(out_dir), "--force", "--no-report"]
    ways = {
        "tuned default": bench,
        "full-sweep best": bench + ["--no-tuned", *layout_flags(full["best"]["layout"])],
        "untuned default": bench + ["--no-tuned"],
    }
    figures: dict[str, list[float]] = {name: [] for name in ways}
    layouts: dict[str, dict] = {}
    for r in range(args.rounds):
        for name, command in ways.items():
            if r or name != next(iter(ways)):
                time.sleep(3)
            run, _, stderr = orch(command, env)
            if name == "tuned default" and "using the tuned layout" not in stderr:
                raise SystemExit("tune_goal: `orch bench` with no layout flag did not use the tuned layout:\n" + stderr[-2000:])
            figures[name].append(float(run["samples_per_second"]))
            layouts[name] = {"precision": run.get("precision"), **run.get("layout", {})}
            print(f"  round {r + 1} {name:16} {figures[name][-1]:8.2f} samples/s  (load {load()})", file=sys.stderr, flush=True)
        shutil.rmtree(out_dir, ignore_errors=True)
    loads["end"] = load()

    med = {name: statistics.median(v) for name, v in figures.items()}
    ratio = med["tuned default"] / med["full-sweep best"]

    def trials(result: dict) -> int:
        return sum(1 for t in result["trials"] if t["samples_per_second"] is not None)

    print(f"machine: {os.cpu_count()} CPUs; load (1/5/15 min) at start {loads['start']}, end {loads['end']}")
    print(f"orch tune (pruned): {trials(pruned)} layouts measured in {pruned_s:.0f} s; best {pruned['best']['label']} "
          f"at {pruned['best']['samples_per_second']:.2f} samples/s ({args.count} samples per trial)")
    print(f"orch tune --full:   {trials(full)} layouts measured in {full_s:.0f} s; best {full['best']['label']} "
          f"at {full['best']['samples_per_second']:.2f} samples/s")
    same = pruned["best"]["layout"] == full["best"]["layout"]
    print(f"the two searches chose {'the same layout' if same else 'different layouts'}")
    print(f"orch bench on {args.bench_count} samples, {args.rounds} interleaved rounds (median, every round):")
    for name, values in figures.items():
        print(f"  {name:16} {med[name]:8.2f}  ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"tuned default / full-sweep best: {ratio:.3f} (goal >= {GOAL}): {'met' if ratio >= GOAL else 'NOT met'}")
    print(f"tuned default / untuned default: {med['tuned default'] / med['untuned default']:.3f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({
            "command": "python benchmarks/tune_goal.py " + shlex.join(sys.argv[1:]),
            "cpus": os.cpu_count(), "load": loads, "count": args.count, "accuracy_count": args.accuracy_count,
            "bench_count": args.bench_count, "rounds": args.rounds,
            "pruned": {"seconds": round(pruned_s, 1), "best": pruned["best"], "trials": pruned["trials"]},
            "full": {"seconds": round(full_s, 1), "best": full["best"], "trials": full["trials"]},
            "bench": {name: {"median": round(med[name], 2), "rounds": [round(v, 2) for v in figures[name]],
                             "command": "orch " + shlex.join(ways[name]), "layout": layouts.get(name)} for name in ways},
            "ratio_tuned_to_full_best": round(ratio, 4), "goal": GOAL, "met": ratio >= GOAL,
        }, indent=2) + "\n")  # fmt: skip
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
