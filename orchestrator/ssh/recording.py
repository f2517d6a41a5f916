"""A fake transport for tests: records the exact commands, returns scripted results."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.ssh.transport import BytesCallback, OutputCallback, Result, Source

Response = Result | BaseException | Callable[[str, str], "Result"]


@dataclass(frozen=True)
class Call:
    """One thing asked of the transport."""

    kind: str  # "run" | "put" | "get" | "stream_in"
    host: str
    command: str | None = None
    local: Path | None = None
    remote: str | None = None
    nbytes: int = 0


@dataclass
class RecordingTransport:
    """Records every call; answers commands from a script.

    Args:
        responses: command -> response, or (host, command) -> response; a
            response is a ``Result``, an exception to raise, or a function
            ``(host, command) -> Result``.
        responder: consulted when no exact entry matches; returns a
            ``Result`` or None (then ``default`` is used).
        default: the answer to anything not scripted (success, no output).
        remote_files: (host, remote path) -> bytes served by ``get``;
            ``put`` stores what it sent there too.
        unreachable: hosts every call to which raises ``RemoteError``.
    """

    responses: dict = field(default_factory=dict)
    responder: Callable[[str, str], Result | None] | None = None
    default: Result = field(default_factory=lambda: Result(0, "", ""))
    remote_files: dict = field(default_factory=dict)
    unreachable: set = field(default_factory=set)
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _reach(self, host: str) -> None:
        if host in self.unreachable:
            from orchestrator.errors import RemoteError

            raise RemoteError(f"node {host} (fake): cannot connect: connection refused", host=host)

    def _answer(self, host: str, command: str) -> Result:
        response = self.responses.get((host, command), self.responses.get(command))
        if response is None and self.responder is not None:
            response = self.responder(host, command)
        if response is None:
            return self.default
        if isinstance(response, BaseException):
            raise response
        if callable(response):
            return response(host, command)
        return response

    def run(
        self, host: str, command: str, *, timeout: float | None = None, on_output: OutputCallback | None = None
    ) -> Result:
        self._record(Call("run", host, command))
        self._reach(host)
        result = self._answer(host, command)
        if on_output and result.stdout:
            on_output("stdout", result.stdout)
        return result

    def stream_in(
        self,
        host: str,
        command: str,
        source: Source,
        *,
        timeout: float | None = None,
        on_bytes: BytesCallback | None = None,
    ) -> Result:
        self._reach(host)
        chunks = iter(lambda: source.read(1 << 16), b"") if hasattr(source, "read") else source
        total = 0
        for chunk in chunks:
            total += len(chunk)
            if on_bytes:
                on_bytes(len(chunk))
        self._record(Call("stream_in", host, command, nbytes=total))
        return self._answer(host, command)

    def put(self, host: str, local: Path, remote: str, *, on_bytes: BytesCallback | None = None) -> None:
        self._reach(host)
        data = Path(local).read_bytes()
        self.remote_files[(host, remote)] = data
        if on_bytes:
            on_bytes(len(data))
        self._record(Call("put", host, local=Path(local), remote=remote, nbytes=len(data)))

    def get(self, host: str, remote: str, local: Path, *, on_bytes: BytesCallback | None = None) -> None:
        self._reach(host)
        self._record(Call("get", host, remote=remote, local=Path(local)))
        if (host, remote) not in self.remote_files:
            from orchestrator.errors import RemoteError

            raise RemoteError(f"node {host} (fake): cannot read {remote}", host=host)
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        Path(local).write_bytes(self.remote_files[(host, remote)])

    def close(self) -> None:
        pass

    def commands(self, host: str | None = None, kind: str | None = None) -> list[str]:
        """The recorded commands (of ``host`` and ``kind`` when given), in order."""
        return [
            c.command
            for c in self.calls
            if c.command is not None and (host is None or c.host == host) and (kind is None or c.kind == kind)
        ]
