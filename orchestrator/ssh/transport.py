"""The transport interface orch talks to nodes through, and safe remote commands.

Everything that reaches a node goes through one injected ``Transport``: the
real one is ``ParamikoTransport``; unit tests use ``RecordingTransport``,
which records the exact commands. Commands are strings for a POSIX shell,
built with ``remote_cmd`` so every value is quoted.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, Union

from orchestrator.errors import RemoteError

# What ``stream_in`` accepts: an iterable of byte chunks or a binary file object.
Source = Union[Iterable[bytes], BinaryIO]
# Called with the number of bytes just sent or received.
BytesCallback = Callable[[int], None]
# Called with a chunk of text as it arrives (stream name "stdout" or "stderr").
OutputCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class Result:
    """What a remote command returned."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited with 0."""
        return self.returncode == 0


class Transport(Protocol):
    """Runs commands and moves bytes to and from nodes, addressed by node name."""

    def run(
        self, host: str, command: str, *, timeout: float | None = None, on_output: OutputCallback | None = None
    ) -> Result:
        """Run ``command`` on ``host`` (a node name) and wait for it.

        Raises:
            RemoteError: the node cannot be reached or the command timed out
                (a non-zero exit status is returned, not raised).
        """

    def put(self, host: str, local: Path, remote: str, *, on_bytes: BytesCallback | None = None) -> None:
        """Copy the local file ``local`` to the path ``remote`` on ``host``."""

    def get(self, host: str, remote: str, local: Path, *, on_bytes: BytesCallback | None = None) -> None:
        """Copy the file ``remote`` on ``host`` to the local path ``local``."""

    def stream_in(
        self,
        host: str,
        command: str,
        source: Source,
        *,
        timeout: float | None = None,
        on_bytes: BytesCallback | None = None,
    ) -> Result:
        """Run ``command`` on ``host`` with ``source`` streamed to its stdin (``docker save | docker load``)."""

    def close(self) -> None:
        """Close every connection."""


def remote_cmd(*argv: object) -> str:
    """One shell command line with every argument quoted.

    Args:
        argv: the program and its arguments (converted with ``str``).

    Returns:
        A string safe to hand to a remote POSIX shell.
    """
    if not argv:
        raise ValueError("remote_cmd needs at least a program name")
    return " ".join(shlex.quote(str(arg)) for arg in argv)


def check(result: Result, *, host: str, command: str, what: str, hint: str | None = None) -> Result:
    """Return ``result`` when it succeeded, else raise a ``RemoteError`` saying ``what`` failed.

    Raises:
        RemoteError: one line with the node, what failed, the exit status and
            the last line of stderr; the full command and stderr tail are attributes.
    """
    if result.ok:
        return result
    tail = "\n".join(result.stderr.strip().splitlines()[-5:])
    last = tail.splitlines()[-1] if tail else (result.stdout.strip().splitlines() or [""])[-1]
    raise RemoteError(
        f"node {host}: {what} failed (exit {result.returncode}){': ' + last[:300] if last else ''}",
        host=host,
        command=command,
        returncode=result.returncode,
        stderr_tail=tail,
        hint=hint,
    )
