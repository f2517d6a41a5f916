"""What the user sees during and after a run: a rich live view and a results table."""

from __future__ import annotations

import threading
import time
from pathlib import Path
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


def live_view(progress: Progress, transient: bool = True, period: float = 10.0):
    """Show ``progress`` on stderr while a run goes; returns the function that stops it.

    On a terminal: a rich live view, cleared when the run ends (the results
    table that follows says it all), so nothing is left half a line before
    the next output. Elsewhere (a log, a pipe): one plain line every
    ``period`` seconds and one at the end, each a whole line.

    A module-level function so that ``functools.partial(live_view, ...)``
    can travel to the process of a submission-mode run.
    """
    import sys

    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        from rich.live import Live

        view = Live(progress, console=console, refresh_per_second=4, transient=True)
        view.start()
        return view.stop
    stop = threading.Event()

    def line() -> None:
        snap = progress.snapshot()
        rate = snap["done"] / snap["elapsed"] if snap["elapsed"] > 0 else 0.0
        sys.stderr.write(f"{snap['title']}: {snap['done']}/{snap['total']} samples, {rate:.1f} samples/s, "
                         f"elapsed {snap['elapsed']:.0f} s\n")
        sys.stderr.flush()

    def loop() -> None:
        while not stop.wait(period):
            line()

    thread = threading.Thread(target=loop, name="orch-progress-lines", daemon=True)
    thread.start()

    def finish() -> None:
        stop.set()
        thread.join()
        line()

    return finish


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
    """The table printed after a run (``summary``: run.json's record + ``run_dir``).

    Paths are not in the table (a narrow terminal would cut them): ``print_summary``
    prints them on lines of their own.
    """
    table = Table(title=f"orch bench: {summary['mode']} run, {summary['execution']} mode", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    sps = summary.get("samples_per_second")
    table.add_row("samples/s", "-" if sps is None else f"{sps:.2f} ({summary.get('samples_per_second_source')})")
    valid = summary.get("result_valid")
    verdict = "VALID" if valid else ("INVALID" if valid is False else "n/a (accuracy run)")
    if summary.get("invalid_reasons"):
        verdict += " (" + "; ".join(r.lower() + ": no" for r in summary["invalid_reasons"]) + ")"
    elif valid and summary["execution"] == "test":
        verdict += " (against the shortened test-mode settings only)"
    table.add_row("loadgen result", verdict)
    if summary["execution"] == "test":
        table.add_row("note", "TEST MODE: not valid for an MLPerf submission")
    if summary.get("synthetic"):
        syn = summary["synthetic"]
        table.add_row("SYNTHETIC", f"{syn['note']} ({syn['rate_per_worker']:,.0f} samples/s per worker, {syn['overhead_ms']} ms per batch)")
    target = summary.get("target_qps") or {}
    if summary["mode"] == "performance" and target:
        table.add_row("target_qps", f"{target['value']:.2f} ({target['source']}{': ' + target['detail'] if target.get('detail') else ''})")
    rerun = summary.get("rerun")
    if rerun:
        table.add_row("re-run", f"the first attempt ended {rerun['first_result']} at {rerun['first_samples_per_second'] or 0:.2f} "
                      f"samples/s (target_qps {rerun['first_target_qps']:.2f}); run again with target_qps "
                      f"{rerun['new_target_qps']:.2f}; the accuracy part was kept")
    accuracy = summary.get("accuracy")
    if accuracy and accuracy.get("f1") is not None:
        text = f"exact_match {accuracy['exact_match']:.3f}, f1 {accuracy['f1']:.3f}"
        if accuracy.get("partial"):
            text = f"PARTIAL: {text} ({accuracy['examples_scored']} of {accuracy['examples_total']} questions; not the data set's)"
        table.add_row("accuracy", text)
    elif accuracy and accuracy.get("note"):
        table.add_row("accuracy", accuracy["note"])
    target = summary.get("accuracy_target")
    if target:
        table.add_row("accuracy target", f"{target.get('meets') or 'NOT bert-99'}: {target.get('reason')}")
    if summary.get("model_note"):
        table.add_row("model", summary["model_note"])
    if summary.get("precision") and summary["precision"] != "fp32":
        table.add_row("precision", summary["precision"])
    layout = summary.get("layout") or {}
    if layout.get("source") == "tuned":
        table.add_row("tuned layout", str(layout.get("message") or layout.get("path")))
    backend = summary["backend"]
    if backend == "auto":
        backend += f" ({', '.join(summary.get('backends') or [])})"
    table.add_row("backend / model", f"{backend} / {summary['model']}")
    nodes, workers = summary.get("nodes", len(summary["per_node"])), summary.get("workers")
    if workers is not None:
        table.add_row("layout", f"{workers} worker{'s' if workers != 1 else ''}, {nodes} node{'s' if nodes != 1 else ''}")
    for node in summary["per_node"]:
        rate = node["samples"] / node["seconds"] if node["seconds"] else 0.0
        # Each node's own backend: on a mixed cluster they differ.
        table.add_row(
            f"node {node['name']}",
            f"{node.get('backend') or summary['backend']}, {len(node.get('workers') or [1])} worker(s): "
            f"{node['samples']} samples, {node['seconds']:.1f} s busy, {rate:.1f} samples/s",
        )
    if summary.get("lost_workers"):
        table.add_row("lost", f"{', '.join(a['name'] for a in summary['lost_workers'])}; {summary['rerun_samples']} samples re-run")
    if summary.get("startup_seconds") is not None:
        how = (summary.get("startup") or {}).get("ray")
        table.add_row("start-up", f"{summary['startup_seconds']:.2f} s before loadgen started"
                      + (f" ({how})" if how else "") + f"; then the run {summary.get('dispatch_seconds', 0):.1f} s")
    if summary.get("calibration_stored"):
        table.add_row("calibration", summary["calibration_stored"])
    return table


def _valid_estimate(summary: dict[str, Any]) -> str:
    """How long a valid submission of this layout takes, from this run's rate: the accuracy part
    answers every feature once, the performance part runs 600 s or more (loadgen's minimum, and
    1.1 x the rate asks for ~660 s)."""
    sps, total = summary.get("samples_per_second"), summary.get("total_sample_count")
    if not sps or not total:
        return " (the accuracy part answers every feature once, then 600 s or more of performance)"
    seconds = total / sps + 660
    return (f" (about {seconds / 60:.0f} minutes or more: {total:,} features at the {sps:.1f} samples/s "
            "measured here, then 600 s or more of performance)")


def next_steps(summary: dict[str, Any]) -> list[str]:
    """What to run next, as commands (printed after the table)."""
    if summary.get("mode") == "submission":
        sub = summary["submission"]
        tree = str(Path(sub["tarball"]).parent)
        steps = [f"re-package it: {sub['submit_command']}"]
        steps.append("check it with the MLCommons checker: python3 -m submission_checker.main --input "
                     f"{tree} --version v6.1 (on the unpacked tarball)")
        if summary.get("execution") == "test":
            steps.insert(0, "a test-mode submission is never valid: run it again with --execution valid")
        return steps
    if summary.get("mode") == "accuracy":
        return ["the performance part: the same command with --mode performance, or --mode submission for both and the tree"]
    if summary.get("execution") == "test":
        return ["accuracy: the same command with --mode accuracy",
                "a valid submission: --mode submission --execution valid --submitter NAME" + _valid_estimate(summary)]
    return ["with an accuracy run of the same layout: orch submit PERF_DIR ACC_DIR --submitter NAME --system-name NAME"]


def print_summary(summary: dict[str, Any], console=None) -> None:
    """The results table(s), then full paths and next steps on lines of their own."""
    from rich.console import Console

    console = console or Console(highlight=False)
    runs = summary.get("runs", [summary])
    for run in runs:
        console.print(results_table(run))
    for run in runs:
        _path_line(f"{run['mode']} run directory", run["run_dir"])
    if "submission" in summary:
        sub = summary["submission"]
        verdict = "valid" if sub["valid"] else "NOT valid: " + "; ".join(sub["invalid_reasons"])
        _path_line("submission tarball", sub["tarball"])
        _path_line("submission tree", sub["tree"])
        _line(f"submission: {verdict}")
    if summary.get("report"):
        _path_line("report", summary["report"])
    for step in next_steps(summary):
        _line(f"next: {step}")


def _path_line(what: str, path: str) -> None:
    _line(f"{what}: {path}")


def _line(text: str) -> None:
    # Plain stdout writes: rich would fold a long path in the middle of a word.
    import sys

    sys.stdout.write(text + "\n")
    sys.stdout.flush()
