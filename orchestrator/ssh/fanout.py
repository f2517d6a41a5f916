"""Run one function on many nodes in parallel and keep every node's outcome.

Like Fabric's ``GroupResult`` / ``GroupException``: nothing stops at the
first failure; the caller gets a result per node, and ``raise_failures``
raises one ``NodeFailures`` that carries each failed node's own exception.

The threads are daemons and the caller waits for them in short, interruptible
joins: Ctrl-C or SIGTERM in the main thread stops the wait at once (no node
not yet started is started), and no thread left blocked on a slow node can
keep the process from exiting. Closing the transport, which the commands do
on their way out, ends what those threads were doing on the nodes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from orchestrator.errors import OrchError

T = TypeVar("T")
N = TypeVar("N")

JOIN_STEP = 0.1  # seconds between checks while waiting: keeps the wait interruptible


@dataclass(frozen=True)
class NodeResult(Generic[T]):
    """One node's outcome: ``value`` when ``ok``, else the exception in ``error``."""

    ok: bool
    value: T | None = None
    error: BaseException | None = None


class NodeFailures(OrchError):
    """Some nodes of a fan-out failed; each node's own exception is kept.

    Attributes:
        what: the step that failed ("preflight", "shipping", ...).
        errors: node name -> its exception, in inventory order.
        total: how many nodes the step ran on.

    ``str()`` is one line naming every failed node; ``lines()`` is one line
    per node (what the CLI prints).
    """

    def __init__(self, what: str, errors: dict[str, BaseException], total: int, *, hint: str | None = None) -> None:
        self.what = what
        self.errors = dict(errors)
        self.total = total
        plural = "s" if total > 1 else ""
        super().__init__(
            f"{what} failed on {len(errors)} of {total} node{plural}: " + "; ".join(self.node_lines().values()),
            hint=hint,
        )
        codes = {getattr(exc, "exit_code", 2) for exc in errors.values() if isinstance(exc, OrchError)}
        self.exit_code = codes.pop() if len(codes) == 1 else 2

    @property
    def hosts(self) -> list[str]:
        """The failed nodes' names."""
        return list(self.errors)

    def node_lines(self) -> dict[str, str]:
        """node -> one line ``node <name>: <reason>`` (hint included)."""
        lines = {}
        for name, exc in self.errors.items():
            text = str(exc) if isinstance(exc, OrchError) else f"{type(exc).__name__}: {exc}"
            text = " ".join(text.split())
            # Errors from the transport already name their node: do not say it twice.
            named = text.startswith((f"node {name}:", f"node {name} "))
            lines[name] = text if named else f"node {name}: {text}"
        return lines

    def lines(self) -> list[str]:
        """One line per failed node, each starting with the step: ``preflight: node n2: ...``."""
        return [f"{self.what}: {line}" for line in self.node_lines().values()]


def _name(node: Any) -> str:
    return node if isinstance(node, str) else node.name


def fan_out(nodes: Iterable[N], fn: Callable[[N], T], *, max_workers: int | None = None) -> dict[str, NodeResult[T]]:
    """Call ``fn(node)`` for every node in parallel threads.

    Args:
        nodes: node names or objects with a ``name``.
        fn: the work for one node; its exceptions (``Exception``) are caught and kept.
        max_workers: thread count (default: one per node, at most 32).

    Returns:
        node name -> ``NodeResult``, in the order the nodes were given.

    Raises:
        BaseException: whatever interrupts the waiting thread (KeyboardInterrupt,
            orch's SIGTERM error), at once; nodes not started yet are not started.
    """
    nodes = list(nodes)
    if not nodes:
        return {}
    pending = list(enumerate(nodes))
    lock = threading.Lock()
    stop = threading.Event()
    outcomes: dict[int, NodeResult[T]] = {}

    def worker() -> None:
        while not stop.is_set():
            with lock:
                if not pending:
                    return
                index, node = pending.pop(0)
            try:
                outcome: NodeResult[T] = NodeResult(True, fn(node))
            except Exception as exc:  # kept per node; the caller reports them all
                outcome = NodeResult(False, error=exc)
            with lock:
                outcomes[index] = outcome

    count = max(1, min(max_workers or 32, len(nodes)))
    threads = [threading.Thread(target=worker, name=f"orch-node-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(JOIN_STEP)
    except BaseException:
        stop.set()
        raise
    lost = NodeResult(False, error=RuntimeError("the node's thread ended without a result"))
    return {_name(node): outcomes.get(index, lost) for index, node in enumerate(nodes)}


def failures(results: dict[str, NodeResult[Any]]) -> dict[str, BaseException]:
    """node name -> exception, for the nodes that failed."""
    return {name: r.error for name, r in results.items() if not r.ok and r.error is not None}


def raise_failures(results: dict[str, NodeResult[Any]], what: str) -> None:
    """Raise one ``NodeFailures`` carrying every failed node's exception, or return when none failed.

    Raises:
        NodeFailures: ``<what> failed on K of N nodes: a: reason; b: reason``,
            with ``errors`` holding each node's own exception.
    """
    failed = failures(results)
    if failed:
        raise NodeFailures(what, failed, len(results))
