"""The layout sweep of `orch tune`: which layouts to measure, in which order, and when to stop.

Plain functions over ``Layout``: the measuring is injected (``measure``
runs one short `orch bench` and returns samples/s; ``guard`` runs the
accuracy check of a reduced precision), so the search is tested without Ray.

The pruned search goes one dimension at a time, from the one that changes
the most to the one that changes the least, each time keeping the best so far:

1. precision x backend (every pair that fits; a reduced precision only after
   the accuracy guard passed it);
2. workers x threads (every split of the node's CPUs into equal workers);
3. batch size, in increasing order, stopping after ``PATIENCE`` points in a
   row below the best by more than ``PRUNE_MARGIN`` (bigger batches rarely come
   back once they lose on a CPU);
4. chunk size, the same way.

``full=True`` measures the whole grid instead (for checking that the pruned
search finds a layout close to the best: benchmarks, docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.errors import Interrupted
from orchestrator.tune.layout import Layout

PRUNE_MARGIN = 0.05
PATIENCE = 2


@dataclasses.dataclass(frozen=True)
class Space:
    """The values each dimension may take on one node profile."""

    cpus: int
    precisions: tuple[str, ...] = ("fp32", "int8-per-token", "int8-dynamic", "int8-static")
    backends: tuple[str, ...] = ("onnxruntime",)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16)
    chunk_sizes: tuple[int | None, ...] = (None, 16, 64)
    workers: tuple[int, ...] | None = None  # default: every divisor of cpus
    start: Layout | None = None  # the layout stage 1 starts from (default: 1 worker, batch 2)

    def splits(self) -> list[tuple[int, int | None]]:
        """(workers, threads per worker) pairs that share the CPUs evenly."""
        if self.workers is not None:
            return [(w, max(1, self.cpus // w)) for w in self.workers]
        return [(w, self.cpus // w) for w in range(1, self.cpus + 1) if self.cpus % w == 0]

    def pairs(self) -> list[tuple[str, str]]:
        """(precision, backend) pairs a backend can run (DeepSparse: no dynamic int8; no fp16 on CPUs)."""
        from orchestrator.errors import InputError
        from orchestrator.models.precision import check_precision

        out = []
        for precision, backend in itertools.product(self.precisions, self.backends):
            try:
                check_precision(precision, backend)
            except InputError:
                continue
            out.append((precision, backend))
        return out


@dataclasses.dataclass
class Trial:
    """One measured layout (or a refused one)."""

    stage: str
    layout: Layout
    samples_per_second: float | None = None
    error: str | None = None
    accuracy: dict[str, Any] | None = None  # the guard's verdict, for a reduced precision

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "layout": dataclasses.asdict(self.layout),
            "label": self.layout.label(),
            "samples_per_second": self.samples_per_second,
            "error": self.error,
            "accuracy": self.accuracy,
        }


@dataclasses.dataclass
class SweepResult:
    """Every trial in the order run, and the best layout found."""

    trials: list[Trial]
    best: Trial | None

    def to_json(self) -> dict[str, Any]:
        return {"trials": [t.to_json() for t in self.trials], "best": self.best.to_json() if self.best else None}


Measure = Callable[[Layout], float]
# (precision, backend) -> (passes, the guard's verdict); called once per pair.
Guard = Callable[[str, str], tuple[bool, dict[str, Any]]]


class _Runner:
    def __init__(self, measure: Measure, guard: Guard, on_trial: Callable[[Trial], None] | None) -> None:
        self.measure = measure
        self.guard = guard
        self.on_trial = on_trial
        self.trials: list[Trial] = []
        self.seen: dict[Layout, Trial] = {}
        self.verdicts: dict[tuple[str, str], tuple[bool, dict[str, Any]]] = {}

    def allowed(self, stage: str, layout: Layout) -> bool:
        """Run the guard for a reduced precision once; record a refused pair as a trial."""
        key = (layout.precision, layout.backend)
        if layout.precision == "fp32":
            return True
        if key not in self.verdicts:
            try:
                self.verdicts[key] = self.guard(*key)
            except Interrupted:
                raise  # Ctrl-C / SIGTERM stops the sweep, it does not refuse a precision
            except Exception as exc:  # noqa: BLE001 - a failed check refuses the pair, and says why
                self.verdicts[key] = (False, {"meets": None, "reason": f"the accuracy check failed: {exc}"})
            ok, verdict = self.verdicts[key]
            if not ok:
                self._record(Trial(stage, layout, error=f"refused by the accuracy guard: {verdict.get('reason')}", accuracy=verdict))
        return self.verdicts[key][0]

    def run(self, stage: str, layout: Layout) -> Trial:
        if layout in self.seen:
            return self.seen[layout]
        trial = Trial(stage, layout, accuracy=self.verdicts.get((layout.precision, layout.backend), (True, None))[1])
        try:
            trial.samples_per_second = float(self.measure(layout))
        except Interrupted:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed layout does not end the sweep; it is shown
            trial.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.seen[layout] = trial
        return self._record(trial)

    def _record(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        if self.on_trial is not None:
            self.on_trial(trial)
        return trial

    def best(self) -> Trial | None:
        measured = [t for t in self.trials if t.samples_per_second is not None]
        return max(measured, key=lambda t: t.samples_per_second) if measured else None


def _ordered(runner: _Runner, stage: str, layouts: Sequence[Layout]) -> None:
    """Measure an ordered dimension, stopping once it has lost ``PATIENCE`` times in a row."""
    behind = 0
    for layout in layouts:
        best = runner.best()
        trial = runner.run(stage, layout)
        if trial.samples_per_second is None or best is None or best.samples_per_second is None:
            continue
        if trial.samples_per_second < (1 - PRUNE_MARGIN) * best.samples_per_second:
            behind += 1
            if behind >= PATIENCE:
                return
        else:
            behind = 0


def planned_size(space: Space, *, full: bool) -> int:
    """How many trials the sweep runs at most (for the progress bar)."""
    if full:
        return len(space.pairs()) * len(space.splits()) * len(space.batch_sizes) * len(space.chunk_sizes)
    return len(space.pairs()) + len(space.splits()) + len(space.batch_sizes) + len(space.chunk_sizes)


def sweep(space: Space, measure: Measure, guard: Guard, *, full: bool = False,
          on_trial: Callable[[Trial], None] | None = None) -> SweepResult:  # fmt: skip
    """Search the layouts of ``space``; see the module docstring.

    Args:
        space: the values to try.
        measure: samples/s of one layout (raises to mark it failed).
        guard: the accuracy check of a reduced (precision, backend).
        full: measure the whole grid instead of the pruned search.
        on_trial: called after every trial (progress bar, live table).

    Returns:
        The trials and the best measured one (None when nothing ran).
    """
    runner = _Runner(measure, guard, on_trial)
    if full:
        grid = itertools.product(space.pairs(), space.splits(), space.batch_sizes, space.chunk_sizes)
        for (precision, backend), (workers, threads), batch, chunk in grid:
            layout = Layout(workers, threads, batch, chunk, precision, backend)
            if runner.allowed("grid", layout):
                runner.run("grid", layout)
        return SweepResult(runner.trials, runner.best())

    start = space.start or Layout(1, space.cpus, 2 if 2 in space.batch_sizes else space.batch_sizes[0], None, "fp32", space.backends[0])
    for precision, backend in space.pairs():
        layout = dataclasses.replace(start, precision=precision, backend=backend)
        if runner.allowed("precision x backend", layout):
            runner.run("precision x backend", layout)
    base = runner.best()
    if base is None:
        return SweepResult(runner.trials, None)
    for workers, threads in space.splits():
        runner.run("workers x threads", dataclasses.replace(base.layout, workers=workers, threads=threads))
    base = runner.best()
    _ordered(runner, "batch size", [dataclasses.replace(base.layout, batch_size=b) for b in sorted(space.batch_sizes)])
    base = runner.best()
    chunks = sorted(space.chunk_sizes, key=lambda c: -1 if c is None else c)
    _ordered(runner, "chunk size", [dataclasses.replace(base.layout, chunk_size=c) for c in chunks])
    return SweepResult(runner.trials, runner.best())
