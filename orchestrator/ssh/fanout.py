"""Run one function on many nodes in parallel and keep every node's outcome.

Like Fabric's ``GroupResult``: nothing stops at the first failure; the
caller gets a result per node and reports all failures together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from orchestrator.errors import OrchError, RemoteError

T = TypeVar("T")
N = TypeVar("N")


@dataclass(frozen=True)
class NodeResult(Generic[T]):
    """One node's outcome: ``value`` when ``ok``, else the exception in ``error``."""

    ok: bool
    value: T | None = None
    error: BaseException | None = None


def _name(node: Any) -> str:
    return node if isinstance(node, str) else node.name


def fan_out(nodes: Iterable[N], fn: Callable[[N], T], *, max_workers: int | None = None) -> dict[str, NodeResult[T]]:
    """Call ``fn(node)`` for every node in parallel threads.

    Args:
        nodes: node names or objects with a ``name``.
        fn: the work for one node; its exceptions are caught and kept.
        max_workers: thread count (default: one per node, at most 32).

    Returns:
        node name -> ``NodeResult``, in the order the nodes were given.
    """
    nodes = list(nodes)
    if not nodes:
        return {}
    workers = max_workers or min(32, len(nodes))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="orch-node") as pool:
        futures = [(_name(node), pool.submit(fn, node)) for node in nodes]
        results: dict[str, NodeResult[T]] = {}
        for name, future in futures:
            try:
                results[name] = NodeResult(True, future.result())
            except Exception as exc:  # kept per node; the caller reports them all
                results[name] = NodeResult(False, error=exc)
    return results


def failures(results: dict[str, NodeResult[Any]]) -> dict[str, BaseException]:
    """node name -> exception, for the nodes that failed."""
    return {name: r.error for name, r in results.items() if not r.ok and r.error is not None}


def raise_failures(results: dict[str, NodeResult[Any]], what: str) -> None:
    """Raise one error listing every failed node, or return when none failed.

    Raises:
        RemoteError: one line, ``<what> failed on K of N nodes: a: reason; b: reason``
            (``host`` is the comma-separated failed node names).
    """
    failed = failures(results)
    if not failed:
        return
    parts = []
    for name, exc in failed.items():
        text = str(exc) if isinstance(exc, OrchError) else f"{type(exc).__name__}: {exc}"
        text = " ".join(text.split())
        # Errors from the transport already name their node: do not say it twice.
        named = text.startswith((f"node {name}:", f"node {name} "))
        parts.append(text if named else f"node {name}: {text}")
    raise RemoteError(
        f"{what} failed on {len(failed)} of {len(results)} node{'s' if len(results) > 1 else ''}: " + "; ".join(parts),
        host=",".join(failed),
    )
