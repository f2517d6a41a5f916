"""The live deploy view: one row per node with its phase and the bytes shipped to it."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

MiB = 1024 * 1024


class DeployView:
    """A ``Listener`` drawing a rich table; use as a context manager around ``deploy``."""

    def __init__(self, nodes: list[str], console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {
            name: {"phase": "waiting", "detail": "", "bytes": 0, "since": None, "until": None} for name in nodes
        }
        self._live: Live | None = None

    def phase(self, node: str, phase: str, detail: str = "") -> None:
        with self._lock:
            row = self._rows.setdefault(node, {"phase": "", "detail": "", "bytes": 0, "since": None, "until": None})
            row["phase"], row["detail"] = phase, detail
            if phase in ("image", "files"):
                if row["since"] is None:
                    row["since"] = time.monotonic()
                row["until"] = None
            elif row["since"] is not None and row["until"] is None:
                row["until"] = time.monotonic()  # shipping is over: the rate stops moving
        self.refresh()

    def shipped(self, node: str, nbytes: int) -> None:
        with self._lock:
            self._rows[node]["bytes"] += nbytes

    def table(self) -> Table:
        table = Table(title="orch deploy", expand=False)
        for column in ("node", "phase", "detail", "shipped", "MiB/s"):
            table.add_column(column, justify="right" if column in ("shipped", "MiB/s") else "left")
        with self._lock:
            for name, row in self._rows.items():
                elapsed = (row["until"] or time.monotonic()) - row["since"] if row["since"] else 0
                rate = f"{row['bytes'] / MiB / elapsed:.1f}" if elapsed > 0 and row["bytes"] else ""
                table.add_row(name, row["phase"], row["detail"], f"{row['bytes'] / MiB:.1f} MiB", rate)
        return table

    def refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.table())

    def __enter__(self) -> DeployView:
        self._live = Live(self.table(), console=self.console, refresh_per_second=4, get_renderable=self.table)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
            if not self.console.is_terminal:
                self.console.file.write("\n")  # rich leaves the last frame unterminated off a terminal
