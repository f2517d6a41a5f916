"""Ray and the workers, kept up across the runs of one process, and one loadgen run on them."""

from __future__ import annotations

import datetime as dt
import re
import sys
from pathlib import Path
import threading
from typing import Any, Callable

from orchestrator import __version__
from orchestrator.bench import calibration, driver_stats
from orchestrator.bench import config as cfg
from orchestrator.bench.cluster import Slot
from orchestrator.bench.dispatcher import Dispatcher
from orchestrator.bench.harness import run_loadgen
from orchestrator.bench.inputs import Inputs
from orchestrator.bench.placement import Placement
from orchestrator.bench.rundir import RUN_FILE
from orchestrator.bench.view import Progress
from orchestrator.errors import Interrupted, RunError
from orchestrator.loadgen_log import ACCURACY_LOG, read_logs
from orchestrator.records import (
    AccuracyScore,
    BenchConfig,
    Faults,
    Layout,
    LostWorker,
    NodeRun,
    Rerun,
    RunRecord,
    TargetQps,
)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def layout_of(conf: BenchConfig, inputs: Inputs) -> Layout:
    """What a measured throughput depends on besides the system (known before Ray starts)."""
    return Layout(
        backend=conf.backend,
        model_sha256=inputs.model_sha256,
        precision=conf.precision,
        nodes=conf.nodes or 1,
        workers_per_node=conf.workers_per_node,
        threads=conf.threads,
        batch_size=conf.batch_size,
        chunk_size=conf.chunk_size,
    )


def as_interrupt(exc: BaseException) -> Interrupted:
    """An ``Interrupted`` for a KeyboardInterrupt (SIGINT) or orch's own SIGTERM exception."""
    return exc if isinstance(exc, Interrupted) else Interrupted("interrupted (Ctrl-C)")


class Session:
    """Ray and the workers of one run (or of a calibration), started once.

    Args:
        conf: the run.
        inputs: the resolved model, vocab and data set.
        placement: where Ray and the workers run.
        debug: Ray's logs.
        faults: test faults injected into the workers.
    """

    def __init__(
        self, conf: BenchConfig, inputs: Inputs, placement: Placement, *, debug: bool = False, faults: Faults | None = None
    ) -> None:
        self.conf = conf
        self.inputs = inputs
        self.placement = placement
        self.debug = debug
        self.faults = faults or Faults()
        self.actors: dict[str, Any] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        self.slots: list[Slot] = []
        # Start-up, apart from the run: seconds from process start to each step, then to loadgen's start.
        self.startup = driver_stats.Startup()
        self.startup.mark("inputs_resolved")

    def __enter__(self) -> "Session":
        from orchestrator.bench.workers import WorkerSpec, start_or_reuse_workers, start_workers, warm_up

        try:
            # In the try: a Ctrl-C while Ray starts must still shut down what it had started.
            self.startup.ray = self.placement.start(debug=self.debug)
            self.startup.mark("ray_started")
            self.slots = self.placement.slots()
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
                    kill_after_chunks=self.faults.kill_worker_after.get(s.worker),
                    chunk_delay=self.faults.chunk_delay,
                )
                for s in self.slots
            ]
            if self.startup.ray == "orch up" and not self.faults.kill_worker_after and not self.faults.chunk_delay:
                # orch up's Ray outlives this run: keep the workers loaded for the next run of this layout.
                from orchestrator.bench.local_ray import NAMESPACE

                self.actors, self.startup.workers_reused = start_or_reuse_workers(specs, NAMESPACE)
            else:
                self.actors = start_workers(specs)
            self._wait_ready()
            warm_up(self.actors)
            self.startup.mark("workers_ready")
        except BaseException:
            self.placement.stop()
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
                raise RunError(f"worker {name} failed to start: {_innermost(exc)}") from exc
            info["node_ip"] = addresses.get(info.pop("node_id"), "?")
            self.infos[name] = info
            if info["features_key"] != self.inputs.features_key or info["samples_available"] != self.inputs.total:
                raise RunError(
                    f"worker {name} has other features than the driver ({info['samples_available']} samples, "
                    f"key {info['features_key'][:12]}; driver {self.inputs.total}, {self.inputs.features_key[:12]})",
                    hint="the nodes' data set or vocab differ: run orch deploy again",
                )

    def __exit__(self, *exc: object) -> None:
        self.placement.stop()

    def layout(self) -> Layout:
        return layout_of(self.conf, self.inputs)

    def run(
        self,
        mode: str,
        run_dir: Path,
        target: TargetQps,
        *,
        live: Callable[[Progress], Any] | None = None,
        load_before: float | None = None,
        rerun: Rerun | None = None,
    ) -> RunRecord:
        """One loadgen run in ``mode`` written into the folder ``run_dir``; returns run.json's record.

        The folder's life (partial, failed, renamed into place) belongs to the
        caller (``orchestrator.bench.rundir``); this writes user.conf, lets
        loadgen write its logs, and writes run.json last.

        Raises:
            Interrupted: stopped by Ctrl-C / SIGTERM (loadgen finished its query first).
            RunError: the run failed.
        """
        conf = self.conf
        count = cfg.sample_count(conf, self.inputs.total, dataset=self.inputs.dataset_path, mode=mode)
        (run_dir / "user.conf").write_text(cfg.user_conf(
            execution=conf.execution, count=count, target_qps=target.value,
            query_count=cfg.query_count(conf, count, mode), duration=conf.duration if mode == "performance" else None))
        # Said before the run when the driver, not the workers, will set the pace.
        warning = driver_stats.ceiling_warning(self.planned_rate() or (target.value if target.source != "test-sizing" else None))
        if warning:
            sys.stderr.write(f"orch: warning: {warning}\n")
        started_at = now()
        outcome = self._loadgen(mode, run_dir, count, live)
        self.startup.mark("loadgen_started", at=outcome.loadgen_started)
        driver = driver_stats.driver_record(outcome, outcome.report, warning=warning)
        if mode == "performance":
            driver_stats.store_ceiling(driver, samples=outcome.issued, command=conf.command)
        log = read_logs(run_dir)
        report = outcome.report
        sps, source = log.samples_per_second, "loadgen" if log.samples_per_second is not None else None
        if mode == "accuracy" and sps is None and report.wall_seconds > 0:
            sps, source = count / report.wall_seconds, "orch (accuracy run, wall clock of the dispatch)"
        accuracy = self._score(run_dir, count) if mode == "accuracy" else None
        stored = None
        if mode == "performance" and sps and not rerun:
            stored = self._keep_calibration(sps, outcome.issued, load_before, qsl_samples=count)
        record = RunRecord(
            orch_version=__version__,
            command=conf.command,
            scenario=conf.scenario,
            mode=mode,
            execution=conf.execution,
            backend=conf.backend,
            backends=sorted({s.backend or conf.backend for s in self.slots}),
            model=self.inputs.model_name,
            model_note=self.inputs.model_note,
            model_path=str(self.inputs.model_path),
            vocab_path=str(self.inputs.vocab_path),
            dataset_path=str(self.inputs.dataset_path),
            dataset_sha256=self.inputs.dataset_sha256,
            features_key=self.inputs.features_key,
            total_sample_count=self.inputs.total,
            count=count,
            target_qps=target,
            samples_per_second=sps,
            samples_per_second_source=source,
            result_valid=log.result_valid if mode == "performance" else None,
            invalid_reasons=log.unmet if mode == "performance" else [],
            loadgen_errors=log.errors,
            accuracy=accuracy,
            system=self.placement.system,
            nodes=len({s.node for s in self.slots}),
            workers=len(self.slots),
            per_node=self._per_node(report),
            lost_workers=[
                LostWorker(name=name, node=self.infos[name]["node"], reason=report.workers[name].lost_reason)
                for name in report.lost_workers
            ],
            rerun_samples=report.rerun_samples,
            issued_samples=outcome.issued,
            startup_seconds=self.startup.marks["loadgen_started"],
            startup=self.startup.as_dict(),
            driver=driver,
            synthetic=self.synthetic_spec().as_dict() if self.synthetic_spec() else None,
            dispatch_seconds=round(report.wall_seconds, 3),
            started_at=started_at,
            finished_at=now(),
            calibration_stored=stored,
            rerun=rerun,
            precision=self.inputs.variant.precision if self.inputs.variant else conf.precision,
            model_variant=self.inputs.variant.record() if self.inputs.variant else None,
            layout={
                **(self.inputs.layout or {}),
                "workers": len(self.slots),
                "workers_per_node": conf.workers_per_node if conf.cluster_nodes else None,
                "threads": sorted({s.threads for s in self.slots}),
                "batch_size": conf.batch_size,
                "chunk_size": conf.chunk_size,
            },
            accuracy_target=self._guard(accuracy, count, run_dir) if mode == "accuracy" else None,
        )
        record.write(run_dir / RUN_FILE)  # run.json last: its presence marks a complete run
        return record

    def _loadgen(self, mode: str, run_dir: Path, count: int, live):
        """loadgen's test with the dispatcher, the live view and the timeline around it.

        Raises:
            Interrupted: stopped by Ctrl-C / SIGTERM.
            RunError: the dispatch failed (every worker lost, a wrong answer).
        """
        from orchestrator.bench.timeline import TimelineRecorder
        from orchestrator.bench.workers import RayExecutor

        conf = self.conf
        what = "TEST MODE, not valid for submission" if conf.execution == "test" else "valid mode"
        progress = Progress(count, [(s.worker, s.node) for s in self.slots], f"{mode} ({what})")
        executor = RayExecutor(self.actors, return_logits=(mode == "accuracy"))
        stop = threading.Event()
        timeline = TimelineRecorder.for_run(run_dir, slots=self.slots, infos=self.infos, backend=conf.backend,
                                            lengths=self.inputs.lengths, mode=mode, execution=conf.execution, count=count)

        def dispatch(query, on_complete):
            progress.total = len(query)  # the query loadgen issued (samples repeat in a valid run)
            timeline.query_issued(len(query))

            def done(chunk, answer, worker):
                on_complete(chunk, answer, worker)
                timeline.completed(chunk, answer, worker)
                progress.chunk_done(worker, len(chunk), answer.seconds)

            def lost_worker(worker, reason, requeued):
                timeline.worker_lost(worker, reason, requeued)
                progress.worker_lost(worker)

            return Dispatcher(
                executor, list(self.actors), on_complete=done, stop=stop,
                on_worker_lost=lost_worker, on_submit=timeline.submitted,
            ).run(query)  # fmt: skip

        stop_view = live(progress) if live else None
        outcome, error = None, None
        try:
            timeline.loadgen_started()
            outcome = run_loadgen(
                run_dir=run_dir,
                user_conf=run_dir / "user.conf",
                mode=mode,
                sample_count=count,
                lengths=self.inputs.lengths[:count],
                chunk_size=conf.chunk_size,  # None: sized for each worker's rate (bench.chunking)
                batch_size=conf.batch_size,
                dispatch=dispatch,
                stop=stop,
                log_all_responses=self.faults.log_all_responses,
            )
            error = outcome.error
        except BaseException as exc:
            error = exc
            if isinstance(exc, (KeyboardInterrupt, Interrupted)):
                raise as_interrupt(exc) from exc
            raise
        finally:
            timeline.loadgen_finished()
            timeline.close(error=error)
            if stop_view:
                stop_view()  # the live view ends before anything else is printed
        if error is not None:
            msg = error.message if isinstance(error, RunError) else f"{type(error).__name__}: {error}"
            raise RunError(f"the {mode} run failed: {msg}")
        return outcome

    def synthetic_spec(self):
        """The synthetic backend's model, when this run uses it (else None)."""
        from orchestrator.backends.synthetic import is_synthetic, parse_spec

        return parse_spec(self.conf.backend) if is_synthetic(self.conf.backend) else None

    def planned_rate(self) -> float | None:
        """The rate the workers are expected to reach, when it is known before the run (synthetic)."""
        spec = self.synthetic_spec()
        return spec.rate * len(self.slots) if spec else None

    def _keep_calibration(self, sps: float, issued: int, load_before: float | None, *, qsl_samples: int) -> str:
        """Every performance run may size later valid runs, if it is fit to: one line saying what was done."""
        _, said = calibration.store(
            self.placement.system, self.layout(), self.inputs.features_key,
            samples_per_second=sps, samples=issued, seconds=issued / sps,  # loadgen's own timed duration
            source=f"{self.conf.execution} run", command=self.conf.command, load_before=load_before,
            cpus=_cpu_count(), qsl_samples=qsl_samples, total=self.inputs.total,
        )  # fmt: skip
        return said

    def _score(self, run_dir, count: int) -> AccuracyScore:
        from orchestrator.fileio import sha256_file
        from orchestrator.squad.accuracy import accuracy_line, score_accuracy_log, write_accuracy_txt
        from orchestrator.squad.library import load_features

        log = run_dir / ACCURACY_LOG
        features = load_features(self.inputs.dataset_path, self.inputs.vocab_path)
        score = score_accuracy_log(log, features)
        digest = sha256_file(log)
        partial = count < self.inputs.total
        if score.examples_scored == 0:
            # No question had all its features among the samples run: no EM/F1 to report.
            return AccuracyScore(exact_match=None, f1=None, examples_scored=0, examples_total=score.examples_total,
                                 log_sha256=digest, partial=partial,
                                 note="no question had all of its features in the samples run; raise --count")
        note = None
        if partial:
            # Not the data set's EM/F1: no accuracy.txt that could pass for the official one.
            note = (f"PARTIAL: {count} of {self.inputs.total} samples, {score.examples_scored} of "
                    f"{score.examples_total} questions scored; not the data set's accuracy")
            (run_dir / "accuracy-partial.txt").write_text(f"# {note}\n{accuracy_line(score)}\n", encoding="utf-8")
        else:
            write_accuracy_txt(run_dir / "accuracy.txt", score, log_sha256=digest)
        return AccuracyScore(exact_match=score.exact_match, f1=score.f1, examples_scored=score.examples_scored,
                             examples_total=score.examples_total, log_sha256=digest, partial=partial, note=note)

    def _guard(self, accuracy: AccuracyScore | None, count: int, run_dir: Path) -> dict[str, Any] | None:
        """Record this accuracy figure and judge it against the fp32 model's (orchestrator.tune.guard)."""
        from orchestrator.tune.guard import accuracy_target

        variant = self.inputs.variant
        if variant is None or accuracy is None:
            return None
        return accuracy_target(
            precision=variant.precision, model_sha256=variant.sha256, source_sha256=variant.source_sha256,
            features_key=self.inputs.features_key, count=count, f1=accuracy.f1, exact_match=accuracy.exact_match,
            examples_scored=accuracy.examples_scored, run_dir=str(run_dir),
        )  # fmt: skip

    def _per_node(self, report) -> list[NodeRun]:
        nodes: dict[str, dict[str, Any]] = {}
        for name, stats in report.workers.items():
            info = self.infos[name]
            row = nodes.setdefault(info["node"], {
                "name": info["node"], "node_ip": info["node_ip"], "backend": info["backend"], "workers": [],
                "samples": 0, "seconds": 0.0, "device": info["device"], "facts": info["facts"],
            })  # fmt: skip
            row["workers"].append(name)
            row["samples"] += stats.samples
            row["seconds"] += stats.seconds
        return [NodeRun(**row) for row in nodes.values()]


def _cpu_count() -> int | None:
    import os

    return os.cpu_count()


def _innermost(exc: BaseException) -> str:
    """Ray wraps a worker's own error; the innermost message, without its class path."""
    cause = exc
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause
    text = str(cause).strip().splitlines()
    line = text[-1] if text else type(cause).__name__
    return re.sub(r"^[\w.]+(Error|Exception): ", "", line)
