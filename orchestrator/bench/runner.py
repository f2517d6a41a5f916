"""One `orch bench`: resolve inputs, start Ray and the workers, run loadgen, write the run directory.

A run directory is built under a temporary name and renamed into place
only when the run succeeded, with ``run.json`` written last; a failed run
leaves ``<out>.failed-<time>`` (no run.json) and never a directory that
looks complete. An existing run directory is replaced only with --force.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

from orchestrator import __version__
from orchestrator.bench import cluster, config as cfg
from orchestrator.bench.dispatcher import Dispatcher
from orchestrator.bench.harness import read_summary, run_loadgen
from orchestrator.bench.view import Progress
from orchestrator.errors import InputError, RunError

RUN_FILE = "run.json"


@dataclasses.dataclass
class Inputs:
    """Model, vocab and data set actually used, with the QSL's lengths."""

    model_name: str
    model_path: Path
    vocab_path: Path
    dataset_path: Path
    model_note: str | None
    lengths: Any  # np.ndarray, real length per sample
    total: int
    features_key: str = ""  # hash of data set + vocab + parameters
    variant: Any = None  # orchestrator.models.precision.ModelVariant that runs (set by run_bench)
    layout: dict | None = None  # where the layout came from (orchestrator.tune.apply.tuned_conf)


def resolve_inputs(conf: cfg.BenchConfig) -> Inputs:
    """Find the model, vocab and data set, and build (or load cached) features."""
    from orchestrator.models.resolve import ModelChoice, resolve_model
    from orchestrator.squad.library import load_features

    if conf.cluster_nodes:
        # On the head of a deployed cluster: what `orch deploy` shipped to every node.
        deploy = cfg.read_deploy_json()
        if conf.model not in (deploy["model"], deploy["model_path"]):
            raise InputError(
                f"--model {conf.model}: the cluster was deployed with model {deploy['model']}",
                hint=f"run orch deploy --model {conf.model} first, or bench with --model {deploy['model']}",
            )
        choice = ModelChoice(
            name=deploy["model"],
            path=Path(deploy["model_path"]),
            vocab_path=conf.vocab or Path(deploy["vocab_path"]),
            dataset_path=conf.dataset or Path(deploy["dataset_path"]),
            is_demo=deploy["model"] == "demo",
        )
    else:
        choice = resolve_model(conf.model, vocab=conf.vocab, dataset=conf.dataset)
    features = load_features(choice.dataset_path, choice.vocab_path)
    note = None
    if choice.is_demo:
        from orchestrator.models.demo import DEMO_NOTE

        note = DEMO_NOTE
    return Inputs(
        model_name=choice.name,
        model_path=choice.path,
        vocab_path=choice.vocab_path,
        dataset_path=choice.dataset_path,
        model_note=note,
        lengths=features.lengths,
        total=len(features),
        features_key=features.cache_key,
    )


def default_out(mode: str) -> Path:
    """``./orch-runs/<time>-<mode>``, a new directory each time."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("orch-runs") / f"{stamp}-{mode}"


def check_out(out: Path, force: bool) -> None:
    """Refuse an output directory that holds an earlier run, unless forced.

    Raises:
        InputError: ``out`` exists and is not empty, and ``force`` is false.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise InputError(
            f"--out {out} already holds an earlier run",
            hint="choose another --out, or add --force to replace it",
        )


class Session:
    """Ray and the workers, kept up across the runs of one `orch bench`."""

    def __init__(self, conf: cfg.BenchConfig, inputs: Inputs, *, debug: bool = False) -> None:
        self.conf = conf
        self.inputs = inputs
        self.debug = debug
        self.actors: dict[str, Any] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        self.slots: list[cluster.Slot] = []

    def __enter__(self) -> "Session":
        from orchestrator.bench.workers import WorkerSpec, start_workers

        deploy = cfg.read_deploy_json() if self.conf.cluster_nodes else None
        if deploy is not None:
            me = next((n for n in deploy["nodes"] if n["name"] == deploy["node"]), None)
            cluster.start_ray(deploy["ray_address"], debug=self.debug, node_ip=me and me["ray_ip"])
        else:
            cluster.start_ray(self.conf.ray_address, debug=self.debug)
        try:
            if deploy is not None:
                self.slots = cluster.deployed_slots(
                    deploy, list(self.conf.cluster_nodes), self.conf.backend, self.conf.threads, self.conf.workers_per_node
                )
                from orchestrator.models.precision import check_precision

                for backend in {s.backend or self.conf.backend for s in self.slots}:
                    check_precision(self.conf.precision, backend)  # --backend auto: each node's own
            elif self.conf.ray_address:
                self.slots = cluster.cluster_slots(self.conf.nodes, self.conf.threads)
            else:
                self.slots = cluster.local_slots(self.conf.nodes, self.conf.threads)
            kill = _kill_hook()
            specs = [
                WorkerSpec(
                    name=s.worker,
                    node=s.node,
                    backend=s.backend or self.conf.backend,
                    model_path=str(self.inputs.model_path),
                    dataset_path=str(self.inputs.dataset_path),
                    vocab_path=str(self.inputs.vocab_path),
                    threads=s.threads,
                    batch_size=self.conf.batch_size,
                    precision=self.conf.precision,
                    num_cpus=s.num_cpus,
                    num_gpus=s.num_gpus,
                    node_id=s.node_id,
                    kill_after_chunks=kill.get(s.worker),
                    chunk_delay=float(os.environ.get("ORCH_TEST_CHUNK_DELAY", "0") or 0),
                )
                for s in self.slots
            ]
            self.actors = start_workers(specs)
            self._wait_ready()
        except BaseException:
            cluster.stop_ray()
            raise
        return self

    def _wait_ready(self) -> None:
        import ray

        refs = {name: actor.info.remote() for name, actor in self.actors.items()}
        addresses = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        for name, ref in refs.items():
            try:
                info = ray.get(ref, timeout=600)
            except Exception as exc:
                cause = exc
                # Ray wraps the worker's own error; show the innermost message.
                while getattr(cause, "cause", None) is not None:
                    cause = cause.cause
                text = str(cause).strip().splitlines()
                line = text[-1] if text else type(cause).__name__
                # Ray prefixes the worker's exception with its class path.
                line = re.sub(r"^[\w.]+(Error|Exception): ", "", line)
                raise RunError(f"worker {name} failed to start: {line}") from exc
            info["node_ip"] = addresses.get(info.pop("node_id"), "?")
            self.infos[name] = info
            if info["features_key"] != self.inputs.features_key or info["samples_available"] != self.inputs.total:
                raise RunError(
                    f"worker {name} has other features than the driver ({info['samples_available']} samples, "
                    f"key {info['features_key'][:12]}; driver {self.inputs.total}, {self.inputs.features_key[:12]})",
                    hint="the nodes' data set or vocab differ: run orch deploy again",
                )

    def __exit__(self, *exc: object) -> None:
        cluster.stop_ray()

    def run(self, mode: str, out: Path, *, live: Callable[[Progress], Any] | None = None) -> dict[str, Any]:
        """One loadgen run in ``mode`` written to ``out``; returns the run.json content."""
        from orchestrator.bench.workers import RayExecutor

        conf = self.conf
        count = conf.sample_count(self.inputs.total, dataset=self.inputs.dataset_path)
        target_qps = self._target_qps(count, mode)
        out = out.resolve()
        check_out(out, conf.force)
        tmp = out.parent / f".{out.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        started_at = _now()
        conf_path = tmp / "user.conf"
        conf_path.write_text(cfg.user_conf(execution=conf.execution, count=count, target_qps=target_qps))

        progress = Progress(count, [(s.worker, s.node) for s in self.slots], f"{mode} ({'TEST MODE, not valid for submission' if conf.execution == 'test' else 'valid mode'})")
        lost: list[dict[str, Any]] = []
        executor = RayExecutor(self.actors, return_logits=(mode == "accuracy"))

        def dispatch(chunks, on_complete):
            def done(chunk, answer, worker):
                on_complete(chunk, answer, worker)
                progress.chunk_done(worker, len(chunk), answer.seconds)

            def lost_worker(worker, reason, requeued):
                progress.worker_lost(worker)

            return Dispatcher(
                executor, list(self.actors), on_complete=done, on_worker_lost=lost_worker
            ).run(chunks)

        stop_view = live(progress) if live else None
        try:
            outcome = run_loadgen(
                run_dir=tmp,
                user_conf=conf_path,
                mode=mode,
                sample_count=count,
                lengths=self.inputs.lengths[:count],
                chunk_size=conf.effective_chunk_size(count, len(self.slots)),
                dispatch=dispatch,
            )
        finally:
            if stop_view:
                stop_view()
        if outcome.error is not None:
            failed = _mark_failed(tmp, out)
            err = outcome.error
            msg = err.message if isinstance(err, RunError) else f"{type(err).__name__}: {err}"
            raise RunError(f"the {mode} run failed: {msg}", hint=f"its logs are in {failed}") from err
        report = outcome.report
        summary = read_summary(tmp)
        for name in report.lost_workers:
            lost.append({"name": name, "node": self.infos[name]["node"], "reason": report.workers[name].lost_reason})

        result: dict[str, Any] = {
            "orch_version": __version__,
            "command": conf.command,
            "scenario": conf.scenario,
            "mode": mode,
            "execution": conf.execution,
            "backend": conf.backend if conf.backend != "auto" else "auto",
            "backends": sorted({s.backend or conf.backend for s in self.slots}),
            "model": self.inputs.model_name,
            "model_note": self.inputs.model_note,
            "model_path": str(self.inputs.model_path),
            "vocab_path": str(self.inputs.vocab_path),
            "dataset_path": str(self.inputs.dataset_path),
            "total_sample_count": self.inputs.total,
            "count": count,
            "target_qps": target_qps,
            "samples_per_second": summary.samples_per_second,
            "samples_per_second_source": "loadgen" if summary.samples_per_second is not None else None,
            "result_valid": summary.result_valid if mode == "performance" else None,
            "invalid_reasons": summary.invalid_reasons,
            "loadgen_errors": summary.errors,
            "exact_match": None,
            "f1": None,
            "nodes": len({s.node for s in self.slots}),
            "per_node": self._per_node(report),
            "lost_actors": lost,
            "rerun_samples": report.rerun_samples,
            "issued_samples": outcome.issued,
            "dispatch_seconds": report.wall_seconds,
            "started_at": started_at,
            "finished_at": None,
            "complete": True,
            # orchestrator.tune: precision, the model file that ran, the layout and where it came from.
            "precision": self.inputs.variant.precision if self.inputs.variant else conf.precision,
            "model_variant": self.inputs.variant.record() if self.inputs.variant else None,
            "features_key": self.inputs.features_key,
            "layout": {
                **(self.inputs.layout or {}),
                "workers": len(self.slots),
                "workers_per_node": conf.workers_per_node if conf.cluster_nodes else None,
                "threads": sorted({s.threads for s in self.slots}),
                "batch_size": conf.batch_size,
                "chunk_size": conf.effective_chunk_size(count, len(self.slots)),
            },
            "accuracy_target": None,
        }
        if mode == "accuracy":
            result.update(self._score(tmp))
            result["accuracy_target"] = self._guard(result, count, out)
            if result["samples_per_second"] is None and report.wall_seconds > 0:
                result["samples_per_second"] = count / report.wall_seconds
                result["samples_per_second_source"] = "orch (accuracy run, wall clock of the dispatch)"
        elif summary.samples_per_second and conf.execution == "test":
            cfg.store_calibration(self._calibration_key(), summary.samples_per_second, samples=count)
        result["finished_at"] = _now()
        # run.json last: its presence marks a complete run.
        (tmp / RUN_FILE).write_text(json.dumps(result, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
        result["run_dir"] = str(out)
        return result

    def _score(self, run_dir: Path) -> dict[str, Any]:
        from orchestrator.squad.accuracy import score_accuracy_log, write_accuracy_txt
        from orchestrator.squad.library import load_features

        log = run_dir / "mlperf_log_accuracy.json"
        features = load_features(self.inputs.dataset_path, self.inputs.vocab_path)
        score = score_accuracy_log(log, features)
        digest = hashlib.sha256(log.read_bytes()).hexdigest()
        scored = {
            "accuracy_examples_scored": score.examples_scored,
            "accuracy_examples_total": score.examples_total,
            "accuracy_log_sha256": digest,
        }
        if score.examples_scored == 0:
            # No question had all its features among the samples run: no EM/F1
            # to report (and no accuracy.txt, which would claim one).
            return {**scored, "exact_match": None, "f1": None,
                    "accuracy_note": "no question had all of its features in the samples run; raise --count"}
        write_accuracy_txt(run_dir / "accuracy.txt", score, log_sha256=digest)
        return {**scored, "exact_match": score.exact_match, "f1": score.f1}

    def _guard(self, result: dict[str, Any], count: int, out: Path) -> dict[str, Any] | None:
        """Record this accuracy figure and judge it against the fp32 model's (orchestrator.tune.guard)."""
        from orchestrator.tune.guard import accuracy_target

        variant = self.inputs.variant
        if variant is None:
            return None
        return accuracy_target(
            precision=variant.precision, model_sha256=variant.sha256, source_sha256=variant.source_sha256,
            features_key=self.inputs.features_key, count=count, f1=result.get("f1"),
            exact_match=result.get("exact_match"), examples_scored=result.get("accuracy_examples_scored") or 0,
            run_dir=str(out),
        )  # fmt: skip

    def _per_node(self, report) -> list[dict[str, Any]]:
        nodes: dict[str, dict[str, Any]] = {}
        for name, stats in report.workers.items():
            info = self.infos[name]
            row = nodes.setdefault(
                info["node"],
                {
                    "name": info["node"],
                    "node_ip": info["node_ip"],
                    "backend": info["backend"],
                    "workers": [],
                    "samples": 0,
                    "seconds": 0.0,
                    "device": info["device"],
                    "facts": info["facts"],
                },
            )
            row["workers"].append(name)
            row["samples"] += stats.samples
            row["seconds"] += stats.seconds
        return list(nodes.values())

    def _calibration_key(self) -> str:
        return calibration_key_for(self.conf, self.inputs.model_name)

    def _target_qps(self, count: int, mode: str) -> float:
        if self.conf.target_qps:
            return self.conf.target_qps
        if self.conf.execution == "test":
            return cfg.test_target_qps(count)
        stored = cfg.load_calibration(self._calibration_key())
        if stored is None and mode == "accuracy":
            # An accuracy run issues every sample once whatever target_qps says.
            return cfg.test_target_qps(count)
        if stored is None:
            raise InputError(
                "a valid run needs a target QPS: none was given and none was measured for this system",
                hint="pass --target-qps X, or first run `orch bench --execution test` with the same "
                "--nodes/--backend/--model/--batch-size to measure it",
            )
        return stored


def run_bench(conf: cfg.BenchConfig, *, debug: bool = False, live=None) -> dict[str, Any]:
    """Run `orch bench` as configured; returns the summary (run.json content + run_dir).

    In submission mode, runs accuracy then performance into ``<out>/accuracy``
    and ``<out>/performance``, each in a fresh process (loadgen counts
    ``FromConfig`` calls per process, and a second one makes the run unfit
    for submission), then assembles the tree in ``<out>/submission``.

    Args:
        conf: the run as asked for.
        debug: show Ray's logs.
        live: a picklable factory ``live(progress) -> stop`` for the live view.
    """
    if conf.nodes is None:
        conf = dataclasses.replace(conf, nodes=len(conf.cluster_nodes) if conf.cluster_nodes else 1)
    conf.check()
    inputs = resolve_inputs(conf)
    from orchestrator.tune.apply import tuned_conf, variant_for

    conf, inputs.layout = tuned_conf(conf, inputs)
    if inputs.layout.pop("echo", False) and inputs.layout["message"]:
        print(f"orch: {inputs.layout['message']}", file=sys.stderr, flush=True)
    conf.check()  # a tuned layout's values too
    inputs.variant = variant_for(conf, inputs)
    out = (conf.out or default_out(conf.mode)).resolve()
    check_out(out, conf.force)
    conf.sample_count(inputs.total, dataset=inputs.dataset_path)  # fail on --count before Ray starts
    if conf.execution == "valid" and conf.mode != "accuracy" and not conf.target_qps:
        if cfg.load_calibration(calibration_key_for(conf, inputs.model_name)) is None:
            _calibrate(conf, inputs, debug=debug, live=live)
    if conf.mode != "submission":
        with Session(conf, inputs, debug=debug) as session:
            return session.run(conf.mode, out, live=live)

    from orchestrator.submission import assemble

    if out.exists() and conf.force:
        shutil.rmtree(out)
    from orchestrator.tune.guard import check_submittable

    runs = []
    for mode in ("accuracy", "performance"):
        runs.append(_run_in_child(dataclasses.replace(conf, mode=mode, out=out / mode), debug=debug, live=live))
        if mode == "accuracy":
            check_submittable(runs[-1])  # a reduced precision below (or not known to meet) bert-99 stops here
    built = assemble(
        [Path(r["run_dir"]) for r in runs],
        out=out / "submission",
        submitter=conf.submitter or "",
        system_name=conf.system_name or _system_name(conf),
        division=conf.division,
        system_meta=conf.system_meta,
        allow_invalid=conf.execution == "test",
        command=conf.command,
    )
    return {
        "mode": "submission",
        "execution": conf.execution,
        "runs": runs,
        "out": str(out),
        "submission": {
            "tarball": str(built.tarball),
            "tree": str(built.tree_root),
            "summary_csv": str(built.summary_csv),
            "summary_json": str(built.summary_json),
            "valid": built.valid,
            "invalid_reasons": list(built.invalid_reasons),
        },
    }


def calibration_key_for(conf: cfg.BenchConfig, model_name: str) -> str:
    """Where this system's measured throughput is stored (same nodes, backend, model, batch)."""
    if conf.cluster_nodes:
        system = cfg.read_deploy_json()["cluster"] + ":" + ",".join(conf.cluster_nodes)
    else:
        system = conf.ray_address or cfg.local_system_name()
    return cfg.calibration_key(system, conf.backend, model_name, conf.nodes, conf.batch_size, conf.precision)


def _calibrate(conf: cfg.BenchConfig, inputs: Inputs, *, debug: bool, live) -> None:
    """A short test-mode performance run that measures and stores this system's samples/s.

    Run in its own process so the valid run's process calls FromConfig once.
    """
    import tempfile

    count = min(inputs.total, cfg.CALIBRATION_COUNT)
    with tempfile.TemporaryDirectory(prefix="orch-calibration-") as tmp:
        probe = dataclasses.replace(
            conf, mode="performance", execution="test", count=count, out=Path(tmp) / "run", force=True, target_qps=None
        )
        result = _run_in_child(probe, debug=debug, live=live)
    if not result.get("samples_per_second"):
        raise RunError("the calibration run measured no throughput", hint="pass --target-qps X")


def _run_in_child(conf: cfg.BenchConfig, *, debug: bool, live) -> dict[str, Any]:
    """``run_bench`` for one mode in a fresh (spawned) process; its errors re-raised here."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(conf, debug, live, send), name=f"orch-bench-{conf.mode}")
    child.start()
    send.close()
    try:
        message = receive.recv()
    except EOFError:
        message = ("error", f"the {conf.mode} run's process died (exit code {child.join() or child.exitcode})")
    child.join()
    if message[0] == "ok":
        return message[1]
    raise RunError(message[1])


def _child_main(conf: cfg.BenchConfig, debug: bool, live, send) -> None:
    from orchestrator.errors import OrchError

    try:
        send.send(("ok", run_bench(conf, debug=debug, live=live)))
    except OrchError as exc:
        send.send(("error", str(exc)))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent as one line
        import traceback

        if debug:
            traceback.print_exc()
        send.send(("error", f"internal error in the {conf.mode} run: {type(exc).__name__}: {exc}"))
    finally:
        send.close()


def _system_name(conf: cfg.BenchConfig) -> str:
    if conf.cluster_nodes:
        return f"{cfg.read_deploy_json()['cluster']}_{conf.nodes}node_{conf.backend}"
    return cfg.default_system_name(conf.backend, conf.nodes)


def _kill_hook() -> dict[str, int]:
    """Test hook ORCH_TEST_KILL_WORKER="worker:chunks[,worker:chunks]": that worker dies after N chunks."""
    spec = os.environ.get("ORCH_TEST_KILL_WORKER", "")
    hooks = {}
    for part in filter(None, spec.split(",")):
        name, _, after = part.partition(":")
        hooks[name] = int(after or 0)
    return hooks


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _mark_failed(tmp: Path, out: Path) -> Path:
    failed = out.parent / f"{out.name}.failed-{int(time.time())}"
    tmp.rename(failed)
    return failed
