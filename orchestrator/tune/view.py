"""What `orch tune` shows: a progress bar while it measures, a table of what it tried."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.tune.sweep import Trial


class TuneProgress:
    """A progress bar over the planned trials (the pruned search may finish early), one line per trial."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("orch tune"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
            console=console, transient=True,
        )  # fmt: skip
        self.task = None

    def __enter__(self) -> TuneProgress:
        return self  # the bar starts with the first plan: an error before it leaves no empty bar behind

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    @property
    def started(self) -> bool:
        return self.progress.live.is_started

    def plan(self, total: int) -> None:
        """A new sweep of at most ``total`` trials (one per node profile on a cluster)."""
        if not self.started:
            self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("starting", total=total)

    def trial(self, trial: Trial) -> None:
        """One trial done: advance the bar and print its line above it."""
        self.progress.console.print(f"  {_line(trial)}", highlight=False, soft_wrap=True)
        if self.task is not None:
            self.progress.update(self.task, advance=1, description=trial.layout.label())


def _line(trial: Trial) -> str:
    value = f"{trial.samples_per_second:8.2f} samples/s" if trial.samples_per_second is not None else _why_not(trial.error)
    accuracy = f"  [{_accuracy(trial.accuracy)}]" if trial.accuracy else ""
    return f"{trial.stage:20s} {trial.layout.label():40s} {value}{accuracy}"


def tune_table(result: dict[str, Any]) -> Table:
    """Every layout tried (in order), the best marked, and where it was stored."""
    ident = result["identity"]
    table = Table(title=f"orch tune: {ident['system']} ({ident['profile']}), {result['count']} samples per trial")
    for column in ("#", "stage", "workers", "threads", "batch", "chunk", "precision", "backend", "samples/s", "accuracy"):
        table.add_column(column, justify="right" if column in ("#", "workers", "threads", "batch", "chunk", "samples/s") else "left")
    best = result.get("best") or {}
    for i, trial in enumerate(result["trials"], 1):
        layout = trial["layout"]
        sps = trial["samples_per_second"]
        accuracy = trial.get("accuracy") or {}
        mark = " *" if best and trial["layout"] == best["layout"] and sps == best["samples_per_second"] else ""
        table.add_row(
            f"{i}{mark}", trial["stage"], str(layout["workers"]), _dash(layout["threads"]), str(layout["batch_size"]),
            _dash(layout["chunk_size"]), layout["precision"], layout["backend"],
            f"{sps:.2f}" if sps is not None else _why_not(trial.get("error")),
            _accuracy(accuracy),
        )  # fmt: skip
    if best:
        table.caption = (
            f"* best: {best['label']} at {best['samples_per_second']:.2f} samples/s, stored in {result['stored']}; "
            "orch bench uses it by default (flags override it)"
        )
    return table


def _why_not(error: str | None) -> str:
    """A trial without a figure: refused (the accuracy column says why) or failed (with the error)."""
    if error and error.startswith("refused by the accuracy guard"):
        return "refused by the guard"
    return f"failed: {error}" if error else "failed"


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _accuracy(verdict: dict[str, Any]) -> str:
    if not verdict:
        return ""
    if verdict.get("ratio") is not None:
        return f"{verdict.get('meets') or 'below bert-99'} (F1 {100 * verdict['ratio']:.2f}% of fp32)"
    return verdict.get("meets") or f"unknown: {verdict.get('reason') or 'no verdict'}"
