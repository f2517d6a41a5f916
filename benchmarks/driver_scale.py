"""How many workers one loadgen driver keeps fed: bare loadgen against orch, in one run.

Every figure comes from the same run, on the same machine:

(a) bare loadgen with a null SUT in Python: the ceiling of any Python driver.
    Loadgen issues one Offline query; one long-lived thread reads the ids
    and completes every sample at once (no answer data), in batches of
    --complete-batch (4,096). Three ways: ``classic`` (``ConstructSUT``: one
    ``QuerySample`` object per sample, ``s.id`` read for each, a new response
    object per sample), ``fast`` (``ConstructFastSUT``: the ids arrive as a
    list of ints; new responses built with ``map``) and ``pooled`` (the fast
    issue, and the same 4,096 response objects refilled for every batch,
    which ``QuerySamplesComplete`` copies before it returns), which is what
    orch's driver does. The ceiling is the fastest one's rate: the most a
    Python driver gets out of loadgen's binding.
    On more than one core, each round also runs ``pooled`` while a busy loop
    keeps one other core busy ("1 core busy"): orch's driver never runs
    alone (its workers, Ray and loadgen's own threads run beside it), and on
    the 2-vCPU development machine one busy neighbour made the same thread
    1.4x dearer per sample. Shown beside the goal, not instead of it.
(b) ``orch bench --backend synthetic:rate=R`` on the local Ray with 1, 2, 4, 8
    and 16 workers, each modelled at R samples/s, for a query of --count
    samples (>= 2 million) over the same QSL (the data set).

Every orch run is run between two runs of the ceiling (``pooled``); their mean
is that run's *paired ceiling*. The goals are read from the median, over the
rounds, of each orch run's fraction of min(its paired ceiling, workers x R):
on a shared VM the rate of the same work drifts by up to 30% over minutes,
while runs seconds apart agree within a few percent. The table's fraction
column is against the median of every ceiling run instead; both are printed.

For each: samples/s (loadgen's figure), the fraction of min(ceiling,
workers x R), the driver's CPU seconds and peak RSS per million samples
(measured inside the driver process: getrusage's CPU
times, /proc's VmHWM), and for orch the chunk
round-trip percentiles. The goals: orch >= 90% of the ceiling with 8 and 16
workers, >= 97% of workers x R with 1 and 2, peak RSS <= 1.5x bare
loadgen's; the 190-million-sample arithmetic uses the RSS measured at two
query sizes (fixed part + per million).

It also measures start-up (process start to loadgen's start) of a default
local ``orch bench`` (demo model, onnxruntime): without ``orch up``, then with
it (the first run after ``orch up``, and the next one, which finds its workers
loaded).

With --sandbox it runs the synthetic bench on a 3-node ``orch sandbox``
("scale") with 8 synthetic workers per node instead (needs root, Docker and
the sandbox's tools; builds the cpu-onnxruntime image if missing).

    python benchmarks/driver_scale.py [--count 4000000] [--rate auto] [--workers 1,2,4,8,16] [--json-out FILE]
    sudo python benchmarks/driver_scale.py --sandbox [--count 4000000] [--rate auto]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"
SANDBOX = "scale"


# -- (a) bare loadgen, in a child process of its own -------------------------------------------------


def first_completion_ms(run_dir: Path) -> float:
    """Loadgen's min latency: from the query's issue to the first completed sample, in ms."""
    summary = (run_dir / "mlperf_log_summary.txt").read_text()
    line = next(line for line in summary.splitlines() if line.startswith("Min latency (ns)"))
    return round(int(line.split(":")[1]) / 1e6, 1)


def bare_child(variant: str, count: int, qsl: int, batch: int, out: Path) -> dict:
    """One bare loadgen run in this process (the child side); returns its figures."""
    import itertools
    import queue
    import resource
    import threading

    import mlperf_loadgen as lg

    from orchestrator.bench.driver_stats import peak_rss_bytes

    out.mkdir(parents=True, exist_ok=True)
    conf = out / "user.conf"
    # The same test-mode settings orch writes for a query of `count` samples over a QSL of `qsl`.
    conf.write_text(
        f"bert.Offline.target_qps = {count / 1.1 * 0.99:.6g}\nbert.Offline.min_duration = 1000\n"
        f"bert.Offline.min_query_count = {count}\nbert.Offline.performance_sample_count_override = {qsl}\n"
    )
    work: queue.Queue = queue.Queue()
    QSR = lg.QuerySampleResponse
    zero = itertools.repeat(0)

    def complete() -> None:
        item = work.get()
        if item is None:
            return
        if variant == "classic":
            for first in range(0, len(item), batch):
                lg.QuerySamplesComplete([QSR(s.id, 0, 0) for s in item[first : first + batch]])
        elif variant == "fast":
            ids = item[0]
            for first in range(0, len(ids), batch):
                lg.QuerySamplesComplete(list(map(QSR, ids[first : first + batch], zero, zero)))
        else:
            ids = item[0]
            pool = [QSR(0, 0, 0) for _ in range(batch)]
            set_id = QSR.id.fset
            for first in range(0, len(ids), batch):
                part = ids[first : first + batch]
                list(map(set_id, pool, part))
                lg.QuerySamplesComplete(pool if len(part) == batch else pool[: len(part)])

    thread = threading.Thread(target=complete, name="completions")
    thread.start()
    if variant == "classic":
        sut = lg.ConstructSUT(lambda samples: work.put(samples), lambda: None)
    else:
        sut = lg.ConstructFastSUT(lambda ids, indices: work.put((ids, indices)), lambda: None)
    qsl_handle = lg.ConstructQSL(qsl, qsl, lambda _: None, lambda _: None)
    settings = lg.TestSettings()
    settings.FromConfig(str(conf), "bert", "Offline")
    settings.scenario = lg.TestScenario.Offline
    settings.mode = lg.TestMode.PerformanceOnly
    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    lg.StartTestWithLogSettings(sut, qsl_handle, settings, log)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    work.put(None)
    thread.join()
    lg.DestroyQSL(qsl_handle)
    lg.DestroySUT(sut)
    summary = (out / "mlperf_log_summary.txt").read_text()
    sps = float(next(line for line in summary.splitlines() if line.startswith("Samples per second")).split(":")[1])
    return {
        "samples_per_second": sps,
        "loadgen_seconds": round(seconds, 3),
        "cpu_seconds": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3),
        "peak_rss_bytes": peak_rss_bytes(),  # VmHWM: ru_maxrss would say the parent's peak
        "first_completion_ms": first_completion_ms(out),
    }


def bare(variant: str, count: int, qsl: int, batch: int, tmp: Path, *, busy_neighbour: bool = False) -> dict:
    """One bare loadgen run in a child process; with ``busy_neighbour``, while a busy loop keeps another core busy."""
    out = tmp / f"bare-{variant}-{count}-{time.monotonic_ns()}"
    spinner = None
    if busy_neighbour:
        # What orch's driver always has beside it (its workers, Ray, loadgen's own threads), reduced to one
        # process that never sleeps: how much this machine slows the driver's thread for another busy core.
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.3)
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--bare-child", variant, "--count", str(count), "--qsl", str(qsl),
             "--complete-batch", str(batch), "--child-out", str(out)],
            capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if proc.returncode != 0:
        raise SystemExit(f"bare loadgen ({variant}) failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- (b) orch bench --backend synthetic ---------------------------------------------------------------


def orch(*args: str, env: dict | None = None, timeout: int = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"orch {shlex.join(args)} failed with exit code {proc.returncode}")
    return proc


def orch_run(args: list[str], tmp: Path, *, tries: int = 2) -> dict:
    """One `orch bench --json` run; on a shared machine Ray may time out starting: tried again once, said so."""
    for attempt in range(1, tries + 1):
        out = tmp / f"orch-{time.monotonic_ns()}"
        proc = subprocess.run([sys.executable, "-m", "orchestrator", "bench", "--json", "--force", "--out", str(out), *args],
                              capture_output=True, text=True, timeout=3600)  # fmt: skip
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        line = next((x for x in proc.stderr.splitlines() if x.startswith("orch: error:")), proc.stderr[-300:])
        sys.stderr.write(f"attempt {attempt} of orch bench {shlex.join(args)} failed: {line}\n")
        time.sleep(10)
    raise SystemExit(f"orch bench {shlex.join(args)} failed {tries} times")


def synthetic(workers: int, rate: float, count: int, dataset: Path | None, batch_size: int, tmp: Path) -> dict:
    args = ["--backend", f"synthetic:rate={rate:g}", "--nodes", str(workers), "--count", str(count),
            "--batch-size", str(batch_size)]  # fmt: skip
    if dataset:
        args += ["--dataset", str(dataset)]
    r = orch_run(args, tmp)
    d = r["driver"]
    return {
        "samples_per_second": r["samples_per_second"],
        "issued": r["issued_samples"],
        "loadgen_seconds": d["loadgen_seconds"],
        "cpu_seconds": d["cpu_seconds"],
        "completion_thread_cpu_seconds": d["completion_thread_cpu_seconds"],
        "peak_rss_bytes": d["peak_rss_bytes"],
        "chunks": d["chunks"],
        "chunk_round_trip_ms": d["chunk_round_trip_ms"],
        "startup_seconds": r["startup_seconds"],
        "per_worker_samples": [n["samples"] for n in r["per_node"]],
        "first_completion_ms": first_completion_ms(Path(r["run_dir"])),
    }


def startup_figures(tmp: Path) -> dict:
    """Start-up of a default local `orch bench` (demo, onnxruntime): embedded Ray, then with orch up."""
    figures = {}
    for nodes in (1, 2):
        runs = [orch_run(["--nodes", str(nodes)], tmp) for _ in range(2)]
        figures[f"embedded_nodes{nodes}"] = [r["startup"] for r in runs]
    up = json.loads(orch("up", "--json", timeout=300).stdout)
    try:
        for nodes in (1, 2):
            runs = [orch_run(["--nodes", str(nodes)], tmp) for _ in range(2)]
            figures[f"orch_up_nodes{nodes}"] = [r["startup"] for r in runs]
    finally:
        orch("down", timeout=120)
    figures["orch_up_pid"] = up["pid"]
    return figures


# -- the sandbox variant ------------------------------------------------------------------------------


def sandbox_run(args, rate: float, qsl_dataset: Path | None, tmp: Path) -> dict:
    """3-node sandbox, 8 synthetic workers per node, the same query; needs root and Docker."""
    import yaml

    from orchestrator.images.base import build_base
    from orchestrator.images.build import build_image, docker_client
    from orchestrator.images.plan import DEFAULT_BASE_IMAGE
    from orchestrator.sandbox import lifecycle

    client = docker_client()
    image = build_image("cpu-onnxruntime", base_image=build_base(DEFAULT_BASE_IMAGE, client=client).tag, client=client).plan.tag
    with lifecycle.running(3, name=SANDBOX, inventory_path=tmp / "sandbox.yaml") as up:
        data = yaml.safe_load(up.plan.inventory_path.read_text())
        data["images"] = {"cpu-onnxruntime": image}
        inventory = tmp / "inventory.yaml"
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        deploy = ["deploy", "-i", str(inventory)] + (["--dataset", str(qsl_dataset)] if qsl_dataset else [])
        orch(*deploy)
        result = json.loads(orch("bench", "-i", str(inventory), "--json", "--force", "--out", str(tmp / "sandbox-run"),
                                 "--backend", f"synthetic:rate={rate:g},per_node=8", "--count", str(args.count),
                                 "--batch-size", str(args.batch_size)).stdout)  # fmt: skip
    d = result["driver"]
    return {
        "image": image,
        "samples_per_second": result["samples_per_second"],
        "workers": sum(len(n["workers"]) for n in result["per_node"]),
        "cpu_seconds": d["cpu_seconds"],
        "peak_rss_bytes": d["peak_rss_bytes"],
        "chunk_round_trip_ms": d["chunk_round_trip_ms"],
        "startup_seconds": result["startup_seconds"],
        "per_node_samples": {n["name"]: n["samples"] for n in result["per_node"]},
    }


# -- report ---------------------------------------------------------------------------------------------


def per_million(value: float, samples: int) -> float:
    return value * 1e6 / samples


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(what: str, runs: list[dict], *, against: float | None) -> dict:
    """One table row from the rounds of one configuration: the median run's figures, every round's rate."""
    rates = [r["samples_per_second"] for r in runs]
    mid = sorted(runs, key=lambda r: r["samples_per_second"])[len(runs) // 2]
    row = {**mid, "what": what, "rounds": rates, "samples_per_second": median(rates)}
    row["fraction"] = row["samples_per_second"] / against if against else None
    return row


def report(fig: dict) -> str:
    count = fig["count"]
    lines = [
        f"command: {fig['command']}",
        f"machine: {fig['cpus']} CPUs ({fig['cpu_flags']}); load before/after: {fig['load_before']} / {fig['load_after']}",
        f"QSL {fig['qsl']} samples ({fig['dataset']}), query {count:,} samples, {fig['rounds_run']} round(s), medians",
        f"ceiling (bare loadgen, pooled responses): {fig['ceiling']:,.0f} samples/s; "
        f"modelled rate per worker R = {fig['rate']:,.0f} samples/s",
        "",
        f"{'what':<30}{'samples/s':>11}{'of min(ceil,n*R)':>17}{'CPU s/M':>8}{'RSS MB/M':>9}{'RSS MB':>7}"
        f"{'1st ms':>7}{'chunks':>7}{'round trip ms p50/90/99/max':>29}  rounds (samples/s)",
    ]
    for row in fig["rows"]:
        rt = row.get("chunk_round_trip_ms")
        rts = "/".join(f"{rt[k]:.0f}" for k in ("p50", "p90", "p99", "max")) if rt else "-"
        frac = f"{row['fraction']:.3f}" if row.get("fraction") is not None else "-"
        rounds = ", ".join(f"{r:,.0f}" for r in row.get("rounds", [row["samples_per_second"]]))
        lines.append(
            f"{row['what']:<30}{row['samples_per_second']:>11,.0f}{frac:>17}"
            f"{per_million(row['cpu_seconds'], row['samples']):>8.2f}"
            f"{per_million(row['peak_rss_bytes'] / 2**20, row['samples']):>9.1f}{row['peak_rss_bytes'] / 2**20:>7.0f}"
            f"{row.get('first_completion_ms', 0):>7.0f}{row.get('chunks', '-'):>7}{rts:>29}  {rounds}"
        )
    lines.append("(1st ms: loadgen's min latency, from the query's issue to its first completed sample; "
                 "CPU: the driver process, getrusage; RSS: its VmHWM)")  # fmt: skip
    lines.append("")
    lines.extend(fig["verdicts"])
    if fig.get("startup"):
        lines.append("")
        lines.append("start-up of `orch bench` (demo model, onnxruntime), seconds from process start: "
                     "inputs resolved / Ray up / workers ready / loadgen starts")  # fmt: skip
        for key, runs in fig["startup"].items():
            if isinstance(runs, list):
                for i, s in enumerate(runs, 1):
                    lines.append(
                        f"  {key:<18} run {i}: {s.get('inputs_resolved', 0):5.2f} / {s.get('ray_started', 0):5.2f} / "
                        f"{s.get('workers_ready', 0):5.2f} / {s.get('loadgen_started', 0):5.2f}"
                        f"  (Ray: {s.get('ray')}, workers reused: {s.get('workers_reused')})"
                    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=4_000_000, help="samples in the query (>= 2,000,000 for the goals)")
    parser.add_argument("--rate", default="auto", help="modelled samples/s per worker (auto: the first measured ceiling / 8)")
    parser.add_argument("--workers", default="1,2,4,8,16")
    parser.add_argument("--rounds", type=int, default=3, help="every configuration this many times, interleaved; medians")
    parser.add_argument("--batch-size", type=int, default=256, help="the synthetic workers' batch (chunks are multiples of it)")
    parser.add_argument("--complete-batch", type=int, default=4096, help="bare loadgen: responses per QuerySamplesComplete")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET if DEFAULT_DATASET.exists() else None)
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--sandbox", action="store_true", help="the 3-node sandbox variant (8 synthetic workers per node)")
    parser.add_argument("--json-out", type=Path)
    # Internal: one bare loadgen run in this (child) process.
    parser.add_argument("--bare-child", choices=["classic", "fast", "pooled"], help=argparse.SUPPRESS)
    parser.add_argument("--qsl", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        print(json.dumps(bare_child(args.bare_child, args.count, args.qsl, args.complete_batch, args.child_out)))
        return 0

    from orchestrator.models.demo import demo_dataset_path, demo_vocab_path
    from orchestrator.squad.library import load_features

    dataset = args.dataset.resolve() if args.dataset else None
    qsl = len(load_features(dataset or demo_dataset_path(), demo_vocab_path()))
    flags = subprocess.run("lscpu | grep -o 'avx512[a-z_]*\\|avx2' | sort -u | tr '\\n' ' '", shell=True,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    workers = [int(w) for w in args.workers.split(",")]
    fig: dict = {
        "command": "python benchmarks/driver_scale.py " + shlex.join(sys.argv[1:]),
        "cpus": os.cpu_count(), "cpu_flags": flags, "qsl": qsl, "count": args.count, "rounds_run": args.rounds,
        "dataset": str(dataset) if dataset else "demo", "rows": [], "verdicts": [], "load_before": load(), "raw": {},
    }  # fmt: skip
    raw: dict[str, list[dict]] = fig["raw"]
    with tempfile.TemporaryDirectory(prefix="orch-driver-scale-") as tmp_name, contextlib.ExitStack() as cleanup:
        tmp = Path(tmp_name)
        os.environ.setdefault("ORCH_CACHE_DIR", str(tmp / "cache"))

        def bare_run(variant: str, count: int, busy_neighbour: bool = False) -> dict:
            return {"samples": count, "load": load(),
                    **bare(variant, count, qsl, args.complete_batch, tmp, busy_neighbour=busy_neighbour)}  # fmt: skip

        # The synthetic runs join one local Ray (orch up): less start-up load on the machine, and
        # every round of a layout finds its workers loaded. Start-up itself is measured apart.
        if not args.sandbox:
            orch("up", timeout=300)
            # Whatever happens, down before the temporary cache (which holds its state file) goes.
            cleanup.callback(subprocess.run, [sys.executable, "-m", "orchestrator", "down"], capture_output=True, timeout=120)
        # A first synthetic run, not reported: builds the feature cache and warms the page cache.
        rate = float(args.rate) if args.rate != "auto" else None
        synthetic(1, rate or 100_000.0, 100_000, dataset, args.batch_size, tmp)
        # Every orch run sits between two ceiling runs, its own "paired ceiling" (their mean): on
        # this kind of machine the rate of the same work drifts by up to 30% over minutes, while
        # runs a few seconds apart agree within a few percent.
        paired: dict[int, list[float]] = fig.setdefault("paired_ceiling", {})
        for round_no in range(args.rounds):
            if (os.cpu_count() or 1) > 1:
                raw.setdefault("pooled_busy", []).append(bare_run("pooled", args.count, busy_neighbour=True))
            if round_no == 0:
                raw["fast"] = [bare_run("fast", args.count)]
                raw["classic"] = [bare_run("classic", args.count)]
            raw.setdefault("pooled", []).append(bare_run("pooled", args.count))
            if rate is None:
                rate = max(1000.0, round(raw["pooled"][0]["samples_per_second"] / 8, -3))
            if args.sandbox:
                raw.setdefault("sandbox", []).append({"samples": args.count, "load": load(),
                                                      **sandbox_run(args, rate, dataset, tmp)})  # fmt: skip
                continue
            for n in workers:
                before = load()
                raw.setdefault(f"orch{n}", []).append({"samples": args.count, "load": before,
                                                       **synthetic(n, rate, args.count, dataset, args.batch_size, tmp)})  # fmt: skip
                raw["pooled"].append(bare_run("pooled", args.count))
                neighbours = (raw["pooled"][-2]["samples_per_second"], raw["pooled"][-1]["samples_per_second"])
                paired.setdefault(n, []).append(sum(neighbours) / 2)
        fig["rate"] = rate
        ceiling = median([r["samples_per_second"] for r in raw["pooled"]])
        fig["ceiling"] = ceiling
        rows = fig["rows"]
        rows.append(summarise("bare loadgen, pooled (ceiling)", raw["pooled"], against=None))
        if raw.get("pooled_busy"):
            rows.append(summarise("bare loadgen, 1 core busy", raw["pooled_busy"], against=None))
        rows.append(summarise("bare loadgen, fast", raw["fast"], against=None))
        rows.append(summarise("bare loadgen, classic", raw["classic"], against=None))
        orch_rows = {}
        if args.sandbox:
            n = raw["sandbox"][0]["workers"]
            rows.append(summarise(f"sandbox, 3 nodes x 8 workers", raw["sandbox"], against=min(ceiling, n * rate)))
        for n in workers if not args.sandbox else []:
            orch_rows[n] = summarise(f"orch, {n} worker{'s' if n > 1 else ''}", raw[f"orch{n}"], against=min(ceiling, n * rate))
            rows.append(orch_rows[n])
        # The same at a quarter of the query: the fixed part of the memory and its part per sample.
        small = max(500_000, args.count // 4)
        top = max(orch_rows) if orch_rows else None
        bare_small = bare_run("pooled", small)
        rows.append(summarise(f"bare loadgen, pooled, {small // 1000}k", [bare_small], against=None))
        orch_small = None
        if top:
            orch_small = {"samples": small, "load": load(), **synthetic(top, rate, small, dataset, args.batch_size, tmp)}
            rows.append(summarise(f"orch, {top} workers, {small // 1000}k", [orch_small], against=min(ceiling, top * rate)))

        def slope(big: dict, little: dict) -> tuple[float, float]:
            per = (big["peak_rss_bytes"] - little["peak_rss_bytes"]) / (big["samples"] - little["samples"]) * 1e6
            return big["peak_rss_bytes"] - per * big["samples"] / 1e6, per

        verdicts = fig["verdicts"]
        verdicts.append("ceiling, every run in order: " + ", ".join(f"{r['samples_per_second']:,.0f}" for r in raw["pooled"]))
        for n, goal, against in ((1, 0.97, "n*R"), (2, 0.97, "n*R"), (8, 0.90, "ceiling"), (16, 0.90, "ceiling")):
            if n in orch_rows:
                frac = orch_rows[n]["fraction"]
                # Each round's orch run against its own paired ceiling, then the median of those fractions.
                fractions = [r["samples_per_second"] / min(c, n * rate) for r, c in zip(raw[f"orch{n}"], paired[n])]
                fig.setdefault("paired_fractions", {})[n] = fractions
                pf = median(fractions)
                verdicts.append(f"{n:>2} workers: {pf:.3f} of min(paired ceiling, n*R), median of rounds "
                                f"{', '.join(f'{f:.3f}' for f in fractions)} (goal >= {goal} of {against}): "
                                f"{'met' if pf >= goal else 'NOT met'}")  # fmt: skip
                verdicts.append(f"    of min(median ceiling, n*R), the table's column: {frac:.3f}")
                if against == "ceiling" and raw.get("pooled_busy"):
                    # Not the goal: orch's driver never runs alone; the same bare loadgen beside one busy core.
                    busy = median([r["samples_per_second"] for r in raw["pooled_busy"]])
                    verdicts.append(f"    against bare loadgen with one core busy beside it ({busy:,.0f}): "
                                    f"{orch_rows[n]['samples_per_second'] / busy:.3f}")  # fmt: skip
                if against == "n*R":
                    # Loadgen's clock starts before it hands the query to Python (building the two lists
                    # takes about 0.15-0.2 us per sample, bare loadgen's 1st ms): no SUT can answer in
                    # that time. Shown apart, not as the goal.
                    issue_s = median([r["first_completion_ms"] for r in raw["pooled"]]) / 1000
                    seconds = args.count / orch_rows[n]["samples_per_second"]
                    net = args.count / max(1e-9, seconds - issue_s) / (n * rate)
                    verdicts.append(f"    the same without loadgen's own issue time ({issue_s * 1000:.0f} ms, bare loadgen's "
                                    f"1st ms): {net:.3f} of n*R")  # fmt: skip
        if top:
            bare_big = sorted(raw["pooled"], key=lambda r: r["samples_per_second"])[len(raw["pooled"]) // 2]
            ratio = orch_rows[top]["peak_rss_bytes"] / bare_big["peak_rss_bytes"]
            verdicts.append(f"peak RSS, orch {top} workers / bare loadgen, same query: {ratio:.2f}x (goal <= 1.5x): "
                            f"{'met' if ratio <= 1.5 else 'NOT met'}")  # fmt: skip
            b0, b1 = slope(bare_big, bare_small)
            o0, o1 = slope(orch_rows[top], orch_small)
            fig["rss_model"] = {"bare_fixed_mb": b0 / 2**20, "bare_mb_per_million": b1 / 2**20,
                                "orch_fixed_mb": o0 / 2**20, "orch_mb_per_million": o1 / 2**20}  # fmt: skip
            for who, fixed, per in (("bare loadgen", b0, b1), ("orch driver", o0, o1)):
                verdicts.append(f"{who}: peak RSS = {fixed / 2**20:,.0f} MB + {per / 2**20:,.1f} MB per million samples"
                                f" -> a 190-million-sample query: {(fixed + 190 * per) / 2**30:,.1f} GiB")  # fmt: skip
        if not args.sandbox:
            orch("down", timeout=120)
        if not args.skip_startup and not args.sandbox:
            fig["startup"] = startup_figures(tmp)
    fig["load_after"] = load()
    text = report(fig)
    print(text)
    if args.json_out:
        args.json_out.write_text(json.dumps(fig, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(main())
