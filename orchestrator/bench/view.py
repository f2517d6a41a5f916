"""What the user sees during and after a run: a rich live view and a results table."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


class Progress:
    """Thread-safe counters the dispatcher updates and the live view reads."""

    def __init__(self, total: int, workers: list[tuple[str, str]], title: str) -> None:
        self.total = total
        self.title = title
        self._lock = threading.Lock()
        self._start = time.perf_counter()
        self._done = 0
        self._per_worker: dict[str, dict[str, Any]] = {
            name: {"node": node, "samples": 0, "seconds": 0.0, "lost": False} for name, node in workers
        }

    def chunk_done(self, worker: str, samples: int, seconds: float) -> None:
        with self._lock:
            self._done += samples
            row = self._per_worker[worker]
            row["samples"] += samples
            row["seconds"] += seconds

    def worker_lost(self, worker: str) -> None:
        with self._lock:
            self._per_worker[worker]["lost"] = True

    def snapshot(self) -> dict[str, Any]:
        """The current state as plain data (sent from a remote driver to the controller)."""
        with self._lock:
            return {
                "title": self.title,
                "total": self.total,
                "done": self._done,
                "elapsed": time.perf_counter() - self._start,
                "workers": {k: dict(v) for k, v in self._per_worker.items()},
            }

    def __rich__(self) -> Group:
        return render_snapshot(self.snapshot())


class RemoteProgress:
    """The live view of a driver running elsewhere, fed with its snapshots."""

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None

    def __rich__(self) -> Group | Text:
        if self.latest is None:
            return Text("waiting for the driver on the head node...")
        return render_snapshot(self.latest)


def render_snapshot(snap: dict[str, Any]) -> Group:
    """The live view of one ``Progress.snapshot()``."""
    elapsed, done, rows, total = snap["elapsed"], snap["done"], snap["workers"], snap["total"]
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    head = Text(
        f"{snap['title']}: {done}/{total} samples, {rate:.1f} samples/s overall, "
        f"ETA {'-' if eta is None else f'{eta:.0f} s'}, elapsed {elapsed:.0f} s"
    )
    table = Table(show_header=True, header_style="bold", box=None)
    for col in ("worker", "node", "samples", "samples/s", "state"):
        table.add_column(col)
    for name, row in rows.items():
        sps = row["samples"] / row["seconds"] if row["seconds"] > 0 else 0.0
        table.add_row(name, row["node"], str(row["samples"]), f"{sps:.1f}", "LOST" if row["lost"] else "ok")
    return Group(head, table)


def live_view(progress: Progress, transient: bool = False):
    """Start a live view of ``progress`` on stderr; returns the function that stops it.

    A module-level function so that ``functools.partial(live_view, ...)``
    can travel to the process of a submission-mode run.
    """
    from rich.console import Console
    from rich.live import Live

    view = Live(progress, console=Console(stderr=True), refresh_per_second=4, transient=transient)
    view.start()
    return view.stop


PROGRESS_PREFIX = "ORCH-PROGRESS "


def jsonl_view(progress: Progress, period: float = 0.5):
    """Write ``progress`` snapshots as prefixed JSON lines on stderr (for a controller to draw)."""
    import json
    import sys

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(period):
            sys.stderr.write(PROGRESS_PREFIX + json.dumps(progress.snapshot()) + "\n")
            sys.stderr.flush()

    thread = threading.Thread(target=loop, name="orch-progress", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()
        sys.stderr.write(PROGRESS_PREFIX + json.dumps(progress.snapshot()) + "\n")
        sys.stderr.flush()

    return finish


def results_table(summary: dict[str, Any]) -> Table:
    """The table printed after a run (``summary`` is the run.json content)."""
    table = Table(title=f"orch bench: {summary['mode']} run, {summary['execution']} mode", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    sps = summary.get("samples_per_second")
    table.add_row("samples/s", "-" if sps is None else f"{sps:.2f} ({summary.get('samples_per_second_source')})")
    valid = summary.get("result_valid")
    verdict = "VALID" if valid else ("INVALID" if valid is False else "n/a (accuracy run)")
    if summary.get("invalid_reasons"):
        verdict += " (" + "; ".join(summary["invalid_reasons"]) + ")"
    elif valid and summary["execution"] == "test":
        verdict += " (against the shortened test-mode settings only)"
    table.add_row("loadgen result", verdict)
    if summary["execution"] == "test":
        table.add_row("note", "TEST MODE: not valid for an MLPerf submission")
    if summary.get("f1") is not None:
        table.add_row("accuracy", f"exact_match {summary['exact_match']:.3f}, f1 {summary['f1']:.3f}")
    target = summary.get("accuracy_target")
    if target:
        table.add_row("accuracy target", f"{target.get('meets') or 'NOT bert-99'}: {target.get('reason')}")
    if summary.get("model_note"):
        table.add_row("model", summary["model_note"])
    if summary.get("precision"):
        table.add_row("precision", summary["precision"])
    layout = summary.get("layout") or {}
    if layout.get("source") == "tuned":
        table.add_row("layout", f"tuned ({layout.get('path')})")
    backend = summary["backend"]
    if backend == "auto":
        backend += f" ({', '.join(summary.get('backends') or [])})"
    table.add_row("backend / model", f"{backend} / {summary['model']}")
    for node in summary["per_node"]:
        rate = node["samples"] / node["seconds"] if node["seconds"] else 0.0
        # Each node's own backend: on a mixed cluster they differ.
        table.add_row(
            f"node {node['name']}",
            f"{node.get('backend') or summary['backend']}: {node['samples']} samples, {node['seconds']:.1f} s busy, {rate:.1f} samples/s",
        )
    if summary.get("lost_actors"):
        table.add_row("lost", f"{', '.join(a['name'] for a in summary['lost_actors'])}; {summary['rerun_samples']} samples re-run")
    table.add_row("run directory", summary["run_dir"])
    return table
