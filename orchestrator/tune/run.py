"""`orch tune`: measure layouts with `orch bench` itself, keep the best per system and node profile.

Every trial is one `orch bench` run: locally ``run_bench`` in a fresh process
(the same entry point, so a trial measures exactly what `orch bench` will
run), on a cluster ``run_on_inventory`` (the path `orch bench --inventory`
takes). Trials run in test mode on ``count`` samples. A reduced precision
is tried only after the accuracy guard passed it: one fp32 and one
reduced-precision accuracy run on the same ``accuracy_count`` samples.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import BackendError, InputError, RunError
from orchestrator.tune.guard import TARGETS
from orchestrator.tune.layout import Identity, Layout, fingerprint, store_tuned
from orchestrator.tune.sweep import Space, SweepResult, Trial, planned_size, sweep

DEFAULT_COUNT = 600
GUARD_TARGET = "bert-99"


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """What `orch tune` was asked for."""

    model: str = "demo"
    dataset: Path | None = None
    vocab: Path | None = None
    count: int = DEFAULT_COUNT
    accuracy_count: int | None = None  # None: the whole data set
    precisions: tuple[str, ...] = ("fp32", "int8-per-token", "int8-dynamic", "int8-static")
    backends: tuple[str, ...] | None = None  # None: every installed CPU backend (local) / each profile's
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    chunk_sizes: tuple[int | None, ...] = (None, 16, 64)
    full: bool = False
    inventory: Path | None = None
    command: str = ""
    debug: bool = False

    def check(self) -> None:
        """Raises InputError on an unusable value (naming the flag)."""
        from orchestrator.models.precision import canonical

        if self.count < 1:
            raise InputError(f"--count must be at least 1 (got {self.count})")
        if self.accuracy_count is not None and self.accuracy_count < 1:
            raise InputError(f"--accuracy-count must be at least 1 (got {self.accuracy_count})")
        for name in self.precisions:
            try:
                canonical(name)
            except InputError as exc:
                raise InputError(f"--precisions: {name!r} is unknown", hint=exc.hint) from None
        if not self.precisions or "fp32" not in [canonical(p) for p in self.precisions]:
            raise InputError("--precisions must include fp32 (the accuracy guard compares against it)")
        for flag, values in (("--batch-sizes", self.batch_sizes), ("--chunk-sizes", [c for c in self.chunk_sizes if c is not None])):
            if not all(isinstance(v, int) and v >= 1 for v in values) or (flag == "--batch-sizes" and not values):
                raise InputError(f"{flag} takes positive integers, comma-separated (got {values})")
        if self.inventory is not None and (self.dataset or self.vocab):
            raise InputError("--dataset/--vocab with --inventory: the nodes use what orch deploy shipped", hint="pass them to orch deploy instead")


def installed_cpu_backends() -> tuple[str, ...]:
    """The CPU backends whose runtime is importable here."""
    found = []
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append("onnxruntime")
    if importlib.util.find_spec("deepsparse") is not None:
        found.append("deepsparse")
    return tuple(found)


def _bench_conf(tune: TuneConfig, layout: Layout, *, mode: str, count: int | None, out: Path, **extra):
    """The `orch bench` of one trial. An accuracy run with ``count`` scores that many samples (PARTIAL);
    with None, the whole data set. Tuned layouts are off: the trial's layout is the point."""
    from orchestrator.bench.config import BenchConfig

    return BenchConfig(
        mode=mode, execution="test", count=count, partial_accuracy=mode == "accuracy" and count is not None,
        model=tune.model, dataset=tune.dataset, vocab=tune.vocab,
        batch_size=layout.batch_size, threads=layout.threads, chunk_size=layout.chunk_size,
        precision=layout.precision, backend=layout.backend, out=out, force=True, tuned="off",
        command=f"(orch tune trial) {layout.label()}", **extra,
    )  # fmt: skip


class _Trials:
    """Runs trial benches, one fresh process each (loadgen keeps per-process state)."""

    def __init__(self, tune: TuneConfig, run: Callable[[Any], dict[str, Any]], placement: Callable[[Layout], dict[str, Any]]) -> None:
        self.tune = tune
        self._run = run
        self._placement = placement  # layout -> the BenchConfig fields that place its workers
        self._tmp = tempfile.TemporaryDirectory(prefix="orch-tune-")
        self._n = 0
        self.last: dict[str, Any] | None = None
        self.accuracy_count: int | None = None  # samples of the accuracy runs (the guard's)

    def bench(self, layout: Layout, *, mode: str, count: int | None) -> dict[str, Any]:
        self._n += 1
        out = Path(self._tmp.name) / f"trial-{self._n}-{mode}"
        result = self._run(_bench_conf(self.tune, layout, mode=mode, count=count, out=out, **self._placement(layout)))
        self.last = result
        if mode == "accuracy":
            self.accuracy_count = result.get("count")
        return result

    def close(self) -> None:
        self._tmp.cleanup()


def _guard(trials: _Trials, accuracy_layout: Callable[[str, str], Layout], count: int | None):
    """The guard callback: an fp32 accuracy run (once per backend), then the reduced one; pass at bert-99 or better."""
    passing = {name for name, _ in TARGETS[: [n for n, _ in TARGETS].index(GUARD_TARGET) + 1]}
    measured_fp32: set[str] = set()

    def guard(precision: str, backend: str) -> tuple[bool, dict[str, Any]]:
        if backend not in measured_fp32:
            trials.bench(accuracy_layout("fp32", backend), mode="accuracy", count=count)
            measured_fp32.add(backend)
        result = trials.bench(accuracy_layout(precision, backend), mode="accuracy", count=count)
        verdict = result.get("accuracy_target") or {"meets": None, "reason": "the run reported no accuracy verdict"}
        return verdict.get("meets") in passing, verdict

    return guard


def _throughput(result: dict[str, Any]) -> float:
    sps = result.get("samples_per_second")
    if not sps:
        raise RunError("the trial measured no throughput")
    return float(sps)


def tune_local(tune: TuneConfig, *, on_trial: Callable[[Trial], None] | None = None, on_plan: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Tune the local machine (the embedded Ray cluster); store and return the best layout.

    Returns:
        ``{"identity", "best", "trials", "stored", "count", ...}`` (the --json object).

    Raises:
        InputError: bad flags; RunError: no layout could be measured.
    """
    from orchestrator.backends.base import check_backend
    from orchestrator.bench.config import BenchConfig
    from orchestrator.bench.inputs import resolve_inputs
    from orchestrator.models.precision import canonical
    from orchestrator.tune.apply import identity_for
    from orchestrator.tune.trial import run_trial

    tune.check()
    backends = tune.backends or installed_cpu_backends()
    if not backends:
        raise InputError("no CPU backend is installed", hint="pip install 'orch[cpu]'")
    for backend in backends:
        try:
            check_backend(backend, installed=True)  # unknown or not installed: one line, before any trial
        except BackendError as exc:
            raise InputError(f"--backends {backend}: {exc.message.replace(' (--backend)', '')}", hint=exc.hint) from exc
    probe = BenchConfig(model=tune.model, dataset=tune.dataset, vocab=tune.vocab, tuned="auto")
    inputs = resolve_inputs(probe)
    identity, why_not, hardware = identity_for(probe, inputs)
    assert identity is not None, why_not  # local runs always have one
    count = tune.count  # more than the data set: loadgen repeats samples, as `orch bench --count` does
    if tune.accuracy_count is not None and tune.accuracy_count > inputs.total:
        raise InputError(f"--accuracy-count {tune.accuracy_count} is larger than the data set ({inputs.total} samples)",
                         hint=f"use --accuracy-count {inputs.total} or less (or leave it out: the whole data set)")
    # None: the whole data set (a full accuracy run); fewer: a PARTIAL one, the same samples for fp32 and the variant.
    accuracy_count = tune.accuracy_count if tune.accuracy_count and tune.accuracy_count < inputs.total else None
    cpus = os.cpu_count() or 1
    space = Space(
        cpus=cpus, precisions=tuple(dict.fromkeys(canonical(p) for p in tune.precisions)), backends=tuple(backends),
        batch_sizes=tune.batch_sizes, chunk_sizes=tune.chunk_sizes,
    )  # fmt: skip
    trials = _Trials(tune, lambda conf: run_trial(conf, debug=tune.debug), lambda lay: {"nodes": lay.workers})
    if on_plan is not None:
        on_plan(planned_size(space, full=tune.full))

    def measure(layout: Layout) -> float:
        return _throughput(trials.bench(layout, mode="performance", count=count))

    def accuracy_layout(precision: str, backend: str) -> Layout:
        return Layout(workers=cpus, threads=1, batch_size=4, chunk_size=None, precision=precision, backend=backend)

    guard = _guard(trials, accuracy_layout, accuracy_count)
    try:
        result = sweep(space, measure, guard, full=tune.full, on_trial=on_trial)
    finally:
        trials.close()
    return _finish(tune, identity, hardware, result, count, accuracy_count or inputs.total)


def _finish(tune: TuneConfig, identity: Identity, hardware: Any, result: SweepResult, count: int, accuracy_count: int) -> dict[str, Any]:
    if result.best is None:
        reasons = "; ".join(sorted({t.error for t in result.trials if t.error})) or "nothing ran"
        raise RunError(f"orch tune measured no layout ({reasons})", hint="run again with --debug")
    stored = store_tuned(
        identity, result.best.layout, result.best.samples_per_second, count=count,
        tried=[t.to_json() for t in result.trials], command=tune.command, hardware=hardware,
    )  # fmt: skip
    return {
        "identity": dataclasses.asdict(identity),
        "hardware": hardware,
        "count": count,
        "accuracy_count": accuracy_count,
        "full": tune.full,
        **result.to_json(),
        "stored": str(stored),
        "command": tune.command,
    }


def tune_inventory(tune: TuneConfig, *, on_trial: Callable[[Trial], None] | None = None,
                   on_plan: Callable[[int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Tune every node profile of a deployed cluster, through `orch bench --inventory`'s own path.

    One sweep per profile, on the nodes of that profile; the best layout of each
    is stored under (cluster, profile).

    Returns:
        One ``tune_local``-like object per profile.
    """
    from orchestrator.bench.on_cluster import run_on_inventory
    from orchestrator.hardware import profile_spec
    from orchestrator.inventory import load_inventory
    from orchestrator.models.precision import canonical

    tune.check()
    assert tune.inventory is not None
    inventory = load_inventory(tune.inventory)
    profiles: dict[str, list] = {}
    for node in inventory.nodes:
        profiles.setdefault(node.profile, []).append(node)
    out = []
    for profile, nodes in profiles.items():
        backend = profile_spec(profile).backend
        cpus = min((n.cpus for n in nodes if n.cpus), default=None)
        space = Space(
            cpus=cpus or 1, precisions=tuple(dict.fromkeys(canonical(p) for p in tune.precisions)), backends=(backend,),
            batch_sizes=tune.batch_sizes, chunk_sizes=tune.chunk_sizes,
            # CPUs unknown (no `cpus:` in the inventory): one or two workers, threads left to orch.
            workers=None if cpus else (1, 2),
        )  # fmt: skip
        if not cpus:
            space = dataclasses.replace(space, cpus=2)
        if on_plan is not None:
            on_plan(planned_size(space, full=tune.full))
        trials = _Trials(
            tune, lambda conf: run_on_inventory(conf, tune.inventory, live=False, debug=tune.debug),
            lambda lay, n=len(nodes): {"nodes": n, "workers_per_node": lay.workers},
        )  # fmt: skip

        def measure(layout: Layout, trials=trials) -> float:
            return _throughput(trials.bench(layout, mode="performance", count=tune.count))

        def accuracy_layout(precision: str, backend: str) -> Layout:
            return Layout(workers=1, threads=None, batch_size=4, chunk_size=None, precision=precision, backend=backend)

        guard = _guard(trials, accuracy_layout, tune.accuracy_count)
        try:
            result = sweep(space, measure, guard, full=tune.full, on_trial=on_trial)
        finally:
            trials.close()
        last = trials.last or {}
        variant = last.get("model_variant") or {}
        hardware = sorted({_json({"cpus": n.cpus, "gpus": n.gpus}) for n in nodes})
        identity = Identity(
            inventory.cluster, profile, fingerprint(hardware), variant.get("source_model_sha256", ""), last.get("features_key", "")
        )
        out.append(_finish(tune, identity, hardware, result, tune.count, trials.accuracy_count or 0))
    return out


def _json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True)
