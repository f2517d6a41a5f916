"""The real transport: paramiko SSH, host keys verified, key or agent auth only.

One SSH connection per node, opened on first use and shared by the threads
of a fan-out (paramiko multiplexes channels). Files move through ``cat`` on
exec channels rather than SFTP, so a node only needs a plain sshd, and every
stream gets the same large window.
"""

from __future__ import annotations

import codecs
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import RemoteError
from orchestrator.fileio import atomic_write
from orchestrator.ssh.transport import BytesCallback, OutputCallback, Result, Source, remote_cmd

# Large windows and packets: the default 2 MiB window caps a WAN stream at a
# few MB/s; docker images are hundreds of MB.
WINDOW_SIZE = 1 << 28
MAX_PACKET = 1 << 15
CHUNK = 1 << 20
# Avoid paramiko's rekey every 512 MB mid-image (a pause per rekey).
REKEY_BYTES = 1 << 40


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node."""

    name: str
    hostname: str
    port: int = 22
    user: str = "root"
    identity_file: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    connect_timeout: float = 10.0
    keepalive: int = 15
    retries: int = 3

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name this host has in a known_hosts file."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def targets_from_inventory(inventory: Any) -> dict[str, SshTarget]:
    """An ``SshTarget`` per node of an ``Inventory``, keyed by node name."""
    ssh = inventory.ssh
    return {
        node.name: SshTarget(
            name=node.name,
            hostname=node.host,
            port=inventory.ssh_port(node),
            user=inventory.ssh_user(node),
            identity_file=inventory.identity_file(node),
            known_hosts=ssh.known_hosts,
            connect_timeout=ssh.connect_timeout,
            keepalive=ssh.keepalive,
            retries=ssh.retries,
        )
        for node in inventory.nodes
    }


def _is_transient(exc: BaseException) -> bool:
    """Connection refused/reset/timed out, or sshd dropping us before its banner: worth a retry."""
    import paramiko

    if isinstance(exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)):
        return False
    if isinstance(exc, (socket.timeout, ConnectionError, EOFError, paramiko.ssh_exception.NoValidConnectionsError)):
        return True
    if isinstance(exc, paramiko.SSHException):
        text = str(exc).lower()
        return "banner" in text or "reset" in text
    if isinstance(exc, OSError):
        return exc.errno is not None  # network errors (unreachable, ...) but not ours
    return False


class _AddAndSay:
    """Host key policy for --trust-new-hosts: add an unknown key to known_hosts and say so."""

    def __init__(self, transport: ParamikoTransport, target: SshTarget) -> None:
        self.transport = transport
        self.target = target

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        self.transport._remember_host_key(self.target, key)


class ParamikoTransport:
    """SSH to the nodes with paramiko.

    Args:
        targets: how to reach each node, by node name (``targets_from_inventory``).
        trust_new_hosts: add the key of a host missing from known_hosts to that
            file (and report it through ``notice``) instead of refusing it.
            A host whose key CHANGED is always refused.
        notice: called with one line for each thing worth telling the user.
        sleep: waits between retries (injected for tests).
    """

    def __init__(
        self,
        targets: Mapping[str, SshTarget],
        *,
        trust_new_hosts: bool = False,
        notice: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.targets = dict(targets)
        self.trust_new_hosts = trust_new_hosts
        self.notice = notice or (lambda line: None)
        self._sleep = sleep
        self._clients: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {name: threading.Lock() for name in self.targets}
        self._known_hosts_lock = threading.Lock()
        # Set by close(): a fan-out thread still running after an interrupt must
        # not open a new connection and carry on with the deploy.
        self._closed = False

    @classmethod
    def from_inventory(cls, inventory: Any, **kwargs: Any) -> ParamikoTransport:
        """A transport for every node of ``inventory`` (kwargs as for the constructor)."""
        return cls(targets_from_inventory(inventory), **kwargs)

    # -- connections -----------------------------------------------------------

    def _target(self, host: str) -> SshTarget:
        try:
            return self.targets[host]
        except KeyError:
            raise RemoteError(f"node {host}: not in the inventory", host=host) from None

    def _remember_host_key(self, target: SshTarget, key: Any) -> None:
        import base64
        import hashlib

        path = target.known_hosts.expanduser()
        with self._known_hosts_lock:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with path.open("a", encoding="ascii") as fh:
                fh.write(f"{target.known_hosts_name} {key.get_name()} {key.get_base64()}\n")
        fingerprint = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
        self.notice(
            f"node {target.name}: added host key {key.get_name()} SHA256:{fingerprint} "
            f"of {target.known_hosts_name} to {path} (--trust-new-hosts)"
        )

    def _connect_once(self, target: SshTarget) -> Any:
        import paramiko

        client = paramiko.SSHClient()
        known = target.known_hosts.expanduser()
        if known.exists():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(_AddAndSay(self, target) if self.trust_new_hosts else paramiko.RejectPolicy())
        identity = target.identity_file.expanduser() if target.identity_file else None
        client.connect(
            target.hostname,
            port=target.port,
            username=target.user,
            key_filename=str(identity) if identity else None,
            look_for_keys=identity is None,
            allow_agent=True,
            password=None,
            timeout=target.connect_timeout,
            banner_timeout=target.connect_timeout,
            auth_timeout=target.connect_timeout,
        )
        transport = client.get_transport()
        if target.keepalive:
            transport.set_keepalive(target.keepalive)
        transport.default_window_size = WINDOW_SIZE
        transport.default_max_packet_size = MAX_PACKET
        transport.packetizer.REKEY_BYTES = REKEY_BYTES
        return client

    def _connect_error(self, target: SshTarget, exc: BaseException, attempts: int) -> RemoteError:
        import paramiko

        where = f"node {target.name} ({target.label})"
        if isinstance(exc, paramiko.BadHostKeyException):
            return RemoteError(
                f"{where}: host key does not match the one in {target.known_hosts} (changed key or man-in-the-middle)",
                host=target.name,
                hint="verify the node's key, then remove the old line with ssh-keygen -R",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            key = target.identity_file or "ssh-agent / ~/.ssh keys"
            return RemoteError(
                f"{where}: authentication failed with {key}",
                host=target.name,
                hint="add the controller's public key to the node's authorized_keys or load it into ssh-agent",
            )
        if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
            return RemoteError(
                f"{where}: host key is not in {target.known_hosts}",
                host=target.name,
                hint="check it and add it (ssh-keyscan), or run again with --trust-new-hosts",
            )
        reason = str(exc) or type(exc).__name__
        tries = f" after {attempts} attempt{'s' if attempts > 1 else ''}"
        return RemoteError(
            f"{where}: cannot connect{tries}: {reason.splitlines()[0]}",
            host=target.name,
            hint="check that the node is up and sshd listens on that port",
        )

    def _client(self, host: str) -> Any:
        target = self._target(host)
        with self._locks[host]:
            if self._closed:
                raise RemoteError(f"node {host}: the SSH connection was closed (orch is stopping)", host=host)
            client = self._clients.get(host)
            if client is not None and client.get_transport() is not None and client.get_transport().is_active():
                return client
            delay = 0.5
            attempts = 0
            while True:
                attempts += 1
                try:
                    client = self._connect_once(target)
                    break
                except Exception as exc:  # classified below; anything else is re-raised as one line
                    if attempts > target.retries or not _is_transient(exc):
                        raise self._connect_error(target, exc, attempts) from exc
                    self._sleep(delay)
                    delay = min(delay * 2, 8.0)
            self._clients[host] = client
            return client

    def close(self) -> None:
        """Close every connection; commands still running on them end, and no new one opens."""
        self._closed = True
        for client in list(self._clients.values()):
            client.close()
        self._clients.clear()

    def __enter__(self) -> ParamikoTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands --------------------------------------------------------------

    def _exec(
        self,
        host: str,
        command: str,
        *,
        source: Source | None = None,
        sink: Any = None,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        on_bytes: BytesCallback | None = None,
    ) -> Result:
        """Run one command; stream ``source`` to its stdin and its stdout to ``sink`` (a binary file) if given."""
        client = self._client(host)
        try:
            channel = client.get_transport().open_session(window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET)
        except Exception as exc:
            raise RemoteError(f"node {host}: cannot open an SSH channel: {exc}", host=host, command=command) from exc
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        # Incremental decoders: a UTF-8 character may be split across two reads.
        decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")}

        def drain() -> bool:
            got = False
            while channel.recv_ready():
                data = channel.recv(CHUNK)
                if not data:
                    break
                got = True
                if sink is not None:
                    sink.write(data)
                    if on_bytes:
                        on_bytes(len(data))
                else:
                    out.append(data)
                if on_output:
                    on_output("stdout", decoders["stdout"].decode(data))
            while channel.recv_stderr_ready():
                data = channel.recv_stderr(CHUNK)
                if not data:
                    break
                got = True
                err.append(data)
                if on_output:
                    on_output("stderr", decoders["stderr"].decode(data))
            return got

        def timed_out() -> None:
            channel.close()
            raise RemoteError(
                f"node {host}: command timed out after {timeout:.0f} s: {command[:200]}",
                host=host,
                command=command,
                stderr_tail=b"".join(err).decode("utf-8", "replace")[-2000:],
            )

        try:
            channel.exec_command(command)
            if source is not None:
                chunks = iter(lambda: source.read(CHUNK), b"") if hasattr(source, "read") else source
                for chunk in chunks:
                    if not chunk:
                        continue
                    channel.sendall(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                    drain()
                    if deadline is not None and time.monotonic() > deadline:
                        timed_out()
                channel.shutdown_write()
            while True:
                got = drain()
                if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
                if deadline is not None and time.monotonic() > deadline:
                    timed_out()
                if not got:
                    time.sleep(0.005)
            drain()
            code = channel.recv_exit_status()
            if code == -1:  # no exit status: the channel or the connection closed under the command
                raise EOFError("the channel closed before the command's exit status arrived")
        except (OSError, EOFError) as exc:
            raise RemoteError(
                f"node {host}: connection lost while running: {command[:200]} ({exc})", host=host, command=command
            ) from exc
        finally:
            channel.close()
        return Result(
            code, b"".join(out).decode("utf-8", "replace"), b"".join(err).decode("utf-8", "replace")
        )

    def run(
        self, host: str, command: str, *, timeout: float | None = None, on_output: OutputCallback | None = None
    ) -> Result:
        return self._exec(host, command, timeout=timeout, on_output=on_output)

    def stream_in(
        self,
        host: str,
        command: str,
        source: Source,
        *,
        timeout: float | None = None,
        on_bytes: BytesCallback | None = None,
    ) -> Result:
        return self._exec(host, command, source=source, timeout=timeout, on_bytes=on_bytes)

    def put(self, host: str, local: Path, remote: str, *, on_bytes: BytesCallback | None = None) -> None:
        # Write beside the target then rename, so a cut transfer never leaves a
        # file that looks complete.
        partial = f"{remote}.part"
        command = f"{remote_cmd('cat')} > {remote_cmd(partial)} && {remote_cmd('mv', '-f', partial, remote)}"
        with Path(local).open("rb") as fh:
            result = self.stream_in(host, command, fh, on_bytes=on_bytes)
        if not result.ok:
            raise RemoteError(
                f"node {host}: cannot write {remote}: {result.stderr.strip()[-300:]}",
                host=host,
                command=command,
                returncode=result.returncode,
                stderr_tail=result.stderr[-2000:],
            )

    def get(self, host: str, remote: str, local: Path, *, on_bytes: BytesCallback | None = None) -> None:
        local = Path(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        command = remote_cmd("cat", remote)

        def receive(fh: Any) -> None:
            result = self._exec(host, command, sink=fh, on_bytes=on_bytes)
            if not result.ok:
                raise RemoteError(
                    f"node {host}: cannot read {remote}: {result.stderr.strip()[-300:]}",
                    host=host,
                    command=command,
                    returncode=result.returncode,
                    stderr_tail=result.stderr[-2000:],
                )

        # A cut copy never lands at ``local``: the temporary file is removed.
        atomic_write(local, receive)
