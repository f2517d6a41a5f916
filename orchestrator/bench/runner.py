"""One `orch bench`: check, resolve inputs, size the run, run it (in a process of its own where
loadgen needs one), keep or fail the run directory, assemble a submission.

- Everything that can be checked before Ray starts is checked first.
- A run directory is built under a temporary name and renamed into place
  only when complete (``orchestrator.bench.rundir``); a failed or
  interrupted run is left as ``<out>.failed-<time>``.
- loadgen reads one user.conf per process (a second ``FromConfig`` makes
  the run unfit for submission), so every valid run and each part of a
  submission runs in a fresh spawned process (``RunJob``).
- A valid performance run that loadgen calls INVALID for its size (minimum
  duration or query count unmet: target_qps was too low) is run again once
  with target_qps from the rate it just measured; the first attempt is
  kept beside it and run.json says so.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from orchestrator.bench import calibration
from orchestrator.bench import config as cfg
from orchestrator.bench.placement import placement_for
from orchestrator.bench.rundir import RunDir, repoint
from orchestrator.bench.session import Session, as_interrupt, layout_of
from orchestrator.errors import Interrupted, OrchError, RunError
from orchestrator.records import BenchConfig, Faults, Rerun, RunJob, RunRecord, TargetQps

# Loadgen's unmet conditions that a larger target_qps fixes (and nothing else).
SIZE_CONDITIONS = ("min duration satisfied", "min queries satisfied")


def default_out(mode: str) -> Path:
    """``./orch-runs/<time>-<mode>``, a new directory each time."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("orch-runs") / f"{stamp}-{mode}"


def run_bench(
    conf: BenchConfig, *, debug: bool = False, live: Callable | None = None, faults: Faults | None = None
) -> dict[str, Any]:
    """Run `orch bench` as configured; returns the summary (run.json's record + run_dir, or the submission's).

    Args:
        conf: the run as asked for.
        debug: show Ray's logs.
        live: a picklable factory ``live(progress) -> stop`` for the live view.
        faults: test faults injected into the workers.

    Raises:
        InputError: bad input (before Ray starts).
        Interrupted: Ctrl-C / SIGTERM; the run is left as ``<out>.failed-<time>``.
        RunError: the run failed; likewise.
    """
    from orchestrator.backends.base import check_backend

    if conf.nodes is None:
        conf = conf.replace(nodes=len(conf.cluster_nodes) if conf.cluster_nodes else 1)
    cfg.check(conf)
    placement = placement_for(conf)
    if conf.backend != "auto":
        check_backend(conf.backend, installed=placement.kind == "local")
    conf, inputs, placement = _tuned(conf, placement, announce=True)
    # Everything the run's sizing can refuse, refused before a folder is made or Ray starts.
    for mode in (("accuracy", "performance") if conf.mode == "submission" else (conf.mode,)):
        cfg.sample_count(conf, inputs.total, dataset=inputs.dataset_path, mode=mode)
    if conf.duration and not conf.target_qps:
        _duration_target(conf, inputs, placement)
    out = (conf.out or default_out(conf.mode)).absolute()
    conf = conf.replace(out=out)
    rundir = RunDir(out, kind="submission-run" if conf.mode == "submission" else "run", force=conf.force,
                    command=conf.command)
    rundir.create()
    load_before = calibration.load_average()
    job = RunJob(conf=conf, mode="performance", run_dir=str(rundir.path), load_before=load_before, debug=debug,
                 faults=faults or Faults())
    try:
        if conf.mode == "submission":
            summary = _submission(job, inputs, placement, live)
        else:
            summary = _single(job, inputs, placement, live)
    except BaseException as exc:
        interrupt = isinstance(exc, (KeyboardInterrupt, Interrupted))
        reason = str(as_interrupt(exc)) if interrupt else (str(exc) if isinstance(exc, OrchError) else f"{type(exc).__name__}: {exc}")
        failed = rundir.fail(reason)
        if interrupt:
            stopped = as_interrupt(exc)
            raise Interrupted(f"{stopped.message}: the run was stopped", signal_name=stopped.signal_name,
                              hint=f"what it wrote is in {failed}") from exc
        if isinstance(exc, OrchError):
            exc.hint = (f"{exc.hint}; " if exc.hint else "") + f"what it wrote is in {failed}"
        raise
    partial = rundir.path
    return _moved(summary, partial, rundir.commit())


def _moved(summary: dict[str, Any], partial_path: Path, final: Path) -> dict[str, Any]:
    """Point the summary's paths from the partial folder at the committed one."""
    return repoint(summary, str(partial_path), str(final))


def _single(job: RunJob, inputs, placement, live) -> dict[str, Any]:
    """A performance or an accuracy run (valid performance runs: sized, maybe re-run, each in its own process)."""
    conf = job.conf
    mode = conf.mode
    if conf.execution == "test" or mode == "accuracy":
        target = _fixed_target(conf, inputs, mode, placement)
        record = _execute(job.model_copy(update={"mode": mode, "target": target}), inputs=inputs, placement=placement,
                          live=live)
        return _summary(record, Path(job.run_dir))
    record = _valid_performance(job, inputs, placement, live, Path(job.run_dir))
    return _summary(record, Path(job.run_dir))


def _submission(job: RunJob, inputs, placement, live) -> dict[str, Any]:
    """Accuracy (whole data set) then performance, each in its own process, then the submission tree."""
    from orchestrator.submission import assemble

    conf = job.conf
    top = Path(job.run_dir)
    acc_dir = top / "accuracy"
    acc_dir.mkdir()
    acc_job = job.model_copy(update={"mode": "accuracy", "run_dir": str(acc_dir), "target": _fixed_target(conf, inputs, "accuracy", placement)})
    acc = _in_child(acc_job, live)
    from orchestrator.tune.guard import check_submittable

    check_submittable(acc.model_dump(mode="json"))  # a reduced precision below (or not known to meet) bert-99 stops here
    perf_dir = top / "performance"
    if conf.execution == "valid":
        perf = _valid_performance(job, inputs, placement, live, perf_dir)
    else:
        perf_dir.mkdir()
        perf = _in_child(job.model_copy(update={"run_dir": str(perf_dir), "target": _fixed_target(conf, inputs, "performance", placement)}), live)
    system_name = conf.system_name or placement.default_system_name()
    built = assemble(
        [acc_dir, perf_dir],
        out=top / "submission",
        submitter=conf.submitter or "",
        system_name=system_name,
        division=conf.division,
        system_meta=conf.system_meta,
        allow_invalid=conf.allow_invalid or conf.execution == "test",
        command=conf.command,
    )
    out = Path(str(conf.out))
    submit = ["orch", "submit", str(out), "--submitter", conf.submitter or "", "--system-name", system_name,
              "--out", str(out / "submission"), "--force"]
    if not built.valid:
        submit.insert(-1, "--allow-invalid")
    import shlex

    return {
        "mode": "submission",
        "execution": conf.execution,
        "out": str(top),
        "runs": [_summary(acc, acc_dir), _summary(perf, perf_dir)],
        "submission": {
            "tarball": str(built.tarball),
            "tree": str(built.tree_root),
            "summary_csv": str(built.summary_csv),
            "summary_json": str(built.summary_json),
            "valid": built.valid,
            "invalid_reasons": list(built.invalid_reasons),
            "submit_command": shlex.join(submit),
        },
    }


def _summary(record: RunRecord, run_dir: Path) -> dict[str, Any]:
    return {**record.to_dict(), "run_dir": str(run_dir)}


def _fixed_target(conf: BenchConfig, inputs, mode: str, placement=None) -> TargetQps:
    """target_qps of a test-mode or accuracy run: the flag; for ``--duration``, the expected rate;
    else a value that keeps the query at the samples asked for.

    Raises:
        InputError: ``--duration`` with no way to know the expected rate.
    """
    if conf.target_qps:
        return TargetQps(value=conf.target_qps, source="flag")
    if mode == "performance" and conf.duration:
        return _duration_target(conf, inputs, placement)
    if mode == "accuracy":
        # An accuracy run issues every sample once whatever target_qps says.
        count = cfg.sample_count(conf, inputs.total, dataset=inputs.dataset_path, mode=mode)
        return TargetQps(value=cfg.test_target_qps(count), source="accuracy", detail="an accuracy run issues each sample once")
    count = cfg.sample_count(conf, inputs.total, dataset=inputs.dataset_path, mode=mode)
    query = cfg.query_count(conf, count, mode) or count  # --count beyond the data set: samples repeat
    return TargetQps(value=cfg.test_target_qps(query), source="test-sizing",
                     detail=f"keeps the test query at {query} samples")


def _duration_target(conf: BenchConfig, inputs, placement) -> TargetQps:
    """The expected rate that sizes a ``--duration`` query: the synthetic model's, or a stored calibration."""
    from orchestrator.backends.synthetic import is_synthetic, parse_spec

    if is_synthetic(conf.backend):
        spec = parse_spec(conf.backend)
        workers = (conf.nodes or 1) * (max(1, spec.per_node) if conf.cluster_nodes else 1)
        return TargetQps(value=spec.rate * workers, source="duration",
                         detail=f"the synthetic model: {workers} workers x {spec.rate:g} samples/s")
    cal = calibration.load(placement.system, layout_of(conf, inputs), inputs.features_key) if placement else None
    if cal is None:
        from orchestrator.errors import InputError

        raise InputError(
            "--duration needs the expected samples/s to size the query, and none was measured for this layout",
            hint="pass --target-qps X, or first run `orch bench` in test mode with the same layout (1,000 samples or more)",
        )
    return TargetQps(value=cal.samples_per_second, source="duration", detail=calibration.describe(cal))


def _valid_target(job: RunJob, inputs, placement, live) -> TargetQps:
    """target_qps of a valid performance run: the flag, a fitting calibration, or a calibration run now."""
    conf = job.conf
    if conf.target_qps:
        return TargetQps(value=conf.target_qps, source="flag", detail="--target-qps")
    layout = layout_of(conf, inputs)
    cal = calibration.load(placement.system, layout, inputs.features_key)
    if cal is None:
        rate, note = _calibrate(job, inputs, live)
        cal = calibration.load(placement.system, layout, inputs.features_key)
        if cal is None:  # measured, but not fit to keep (busy machine): used once, and said so
            return TargetQps(value=rate * calibration.MARGIN, source="calibration",
                             detail=f"{calibration.MARGIN:g} x {rate:.2f} samples/s from a calibration run just made ({note})")
    return TargetQps(value=calibration.target_qps(cal), source="calibration", detail=calibration.describe(cal))


def _calibrate(job: RunJob, inputs, live) -> tuple[float, str]:
    """A short test-mode performance run, in its own process, that measures samples/s (and stores it when fit).

    Its query is drawn by loadgen from the whole data set, as the valid run's will be.
    """
    count = min(inputs.total, max(calibration.CALIBRATION_SAMPLES, calibration.MIN_SAMPLES))
    conf = job.conf.replace(mode="performance", execution="test", count=count, whole_qsl=True, target_qps=None, out=None)
    with tempfile.TemporaryDirectory(prefix="orch-calibration-") as tmp:
        probe = job.model_copy(update={"conf": conf, "mode": "performance", "run_dir": tmp,
                                       "target": _fixed_target(conf, inputs, "performance")})
        record = _in_child(probe, live)
    if not record.samples_per_second:
        raise RunError("the calibration run measured no throughput", hint="pass --target-qps X")
    return record.samples_per_second, record.calibration_stored or ""


def _valid_performance(job: RunJob, inputs, placement, live, run_dir: Path) -> RunRecord:
    """A valid performance run into ``run_dir`` (made here); re-run once if loadgen says it was too short."""
    target = _valid_target(job, inputs, placement, live)
    run_dir.mkdir(exist_ok=True)
    perf_job = job.model_copy(update={"mode": "performance", "run_dir": str(run_dir), "target": target})
    record = _in_child(perf_job, live)
    unmet = [r.lower() for r in record.invalid_reasons]
    if record.result_valid is not False or job.conf.is_rerun or not unmet or any(u not in SIZE_CONDITIONS for u in unmet):
        return record
    # The query was too small for 600 s: target_qps was too low. Keep this attempt, size again from it.
    first = run_dir.parent / f"{run_dir.name}-first-attempt"
    if run_dir == Path(job.run_dir):  # the top-level folder itself: keep the attempt inside it
        first = run_dir / "first-attempt"
        first.mkdir()
        for item in list(run_dir.iterdir()):
            if item.name not in ("first-attempt", ".orch-run.json"):
                item.rename(first / item.name)
    else:
        run_dir.rename(first)
        run_dir.mkdir()
    measured = record.samples_per_second or target.value
    new_target = measured * calibration.MARGIN
    rerun = Rerun(
        first_result="INVALID (" + ", ".join(f"{u}: no" for u in unmet) + ")",
        first_samples_per_second=record.samples_per_second,
        first_target_qps=target.value,
        first_seconds=round(record.issued_samples / measured, 1) if measured else 0.0,
        new_target_qps=new_target,
        first_run_dir=os.path.relpath(first, run_dir),
    )
    again = perf_job.model_copy(update={
        "conf": job.conf.replace(is_rerun=True),
        "target": TargetQps(value=new_target, source="rerun",
                            detail=f"{calibration.MARGIN:g} x {measured:.2f} samples/s measured by the first attempt"),
        "rerun": rerun,
    })  # fmt: skip
    return _in_child(again, live)


# --- running one loadgen run, here or in a process of its own ------------------------------


def _tuned(conf: BenchConfig, placement, *, announce: bool = False):
    """The inputs, with the tuned layout applied to the flags not given and the precision's model variant.

    Returns:
        (the configuration to run, its inputs, its placement).
    """
    import dataclasses
    import sys

    from orchestrator.tune.apply import tuned_conf, variant_for

    inputs = placement.resolve_inputs()
    tuned, layout = tuned_conf(conf, inputs)
    if tuned != conf:
        conf = tuned
        cfg.check(conf)  # a tuned layout's values too
        placement = placement_for(conf)
    if layout.pop("echo", False) and layout.get("message") and announce:
        sys.stderr.write(f"orch: {layout['message']}\n")
    inputs = dataclasses.replace(inputs, layout=layout, variant=variant_for(conf, inputs))
    return conf, inputs, placement


def _execute(job: RunJob, *, inputs=None, placement=None, live=None) -> RunRecord:
    """Run ``job`` in this process: start Ray and the workers, run loadgen, write run.json."""
    placement = placement or placement_for(job.conf)
    if inputs is None:
        _, inputs, placement = _tuned(job.conf, placement)
    with Session(job.conf, inputs, placement, debug=job.debug, faults=job.faults) as session:
        return session.run(job.mode, Path(job.run_dir), job.target, live=live, load_before=job.load_before,
                           rerun=job.rerun)


def _in_child(job: RunJob, live) -> RunRecord:
    """``_execute`` in a fresh spawned process (``bench.spawn``); its error (type, message, hint) raised here.

    A Ctrl-C / SIGTERM is forwarded to the child once: it stops in order
    (loadgen finishes its query, Ray goes down) and answers; this waits for
    that answer, ends what is left of the child's Ray, and then lets the
    interrupt go on.
    """
    from orchestrator.bench.child import child_main, error_from
    from orchestrator.bench.spawn import run_child

    def died(code):
        return "error", {"type": "RunError", "message": f"the {job.mode} run's process died (exit code {code})"}

    message, interrupt = run_child(child_main, (job.to_json(), live), name=f"orch-bench-{job.mode}", died=died)
    if interrupt is not None:
        raise as_interrupt(interrupt)
    if message[0] == "ok":
        return RunRecord.from_json(message[1], source=f"the {job.mode} run's answer")
    raise error_from(message[1])
