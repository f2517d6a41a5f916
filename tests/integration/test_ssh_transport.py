"""ParamikoTransport against one real sshd on 127.0.0.1 (root and openssh-server needed)."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.errors import RemoteError
from orchestrator.ssh import ParamikoTransport, SshTarget, remote_cmd

from .local_sshd import SSHD, free_port, local_sshd



@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from local_sshd(tmp_path_factory)


def target(sshd, known_hosts: Path, **kw) -> SshTarget:
    args = dict(
        name="local",
        hostname="127.0.0.1",
        port=sshd["port"],
        user="root",
        identity_file=sshd["dir"] / "client_key",
        known_hosts=known_hosts,
        connect_timeout=5,
        retries=0,
    )
    args.update(kw)
    return SshTarget(**args)


@pytest.fixture
def transport(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd["host_line"])
    with ParamikoTransport({"local": target(sshd, known)}) as t:
        yield t


def test_run_returns_exit_status_and_both_streams(transport):
    result = transport.run("local", remote_cmd("sh", "-c", "echo out; echo err >&2; exit 3"))
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_quoted_odd_values_reach_the_remote_unchanged(transport):
    odd = "it's a $HOME `x` \"y\" ; rm -rf /tmp/nothing & | *"
    assert transport.run("local", remote_cmd("printf", "%s", odd)).stdout == odd


def test_timeout_raises(transport):
    with pytest.raises(RemoteError, match="timed out"):
        transport.run("local", "sleep 5", timeout=0.5)


def test_put_get_roundtrip(transport, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    remote = str(tmp_path / "remote dir" / "copy.bin")
    Path(remote).parent.mkdir()
    sent = []
    transport.put("local", src, remote, on_bytes=sent.append)
    assert sum(sent) == len(data) and Path(remote).read_bytes() == data
    assert not Path(remote + ".part").exists()
    back = tmp_path / "back" / "b.bin"
    transport.get("local", remote, back)
    assert back.read_bytes() == data
    with pytest.raises(RemoteError, match="cannot read"):
        transport.get("local", str(tmp_path / "missing"), tmp_path / "x")
    assert not (tmp_path / "x.part").exists()


def test_stream_in_from_iterable_and_fileobj(transport):
    chunks = [os.urandom(1 << 20) for _ in range(5)]
    result = transport.stream_in("local", "sha256sum", iter(chunks))
    import hashlib

    assert result.ok and result.stdout.split()[0] == hashlib.sha256(b"".join(chunks)).hexdigest()
    result = transport.stream_in("local", "wc -c", io.BytesIO(b"x" * 12345))
    assert result.stdout.strip() == "12345"


def test_unknown_host_key_is_refused_without_trust(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    t = ParamikoTransport({"local": target(sshd, known)})
    with pytest.raises(RemoteError, match="not in .*known_hosts.*--trust-new-hosts"):
        t.run("local", "true")
    assert not known.exists()


def test_trust_new_hosts_adds_the_key_and_says_so(sshd, tmp_path):
    known = tmp_path / "sub" / "known_hosts"
    notices = []
    with ParamikoTransport({"local": target(sshd, known)}, trust_new_hosts=True, notice=notices.append) as t:
        assert t.run("local", "true").ok
    assert known.read_text() == sshd["host_line"]
    assert len(notices) == 1 and "added host key" in notices[0] and "SHA256:" in notices[0]
    # The key is now known: a strict transport accepts it.
    with ParamikoTransport({"local": target(sshd, known)}) as t:
        assert t.run("local", "echo ok").stdout == "ok\n"


def test_changed_host_key_is_refused_even_with_trust(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, b64 = (tmp_path / "other.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{sshd['port']} {kind} {b64}\n")
    t = ParamikoTransport({"local": target(sshd, known)}, trust_new_hosts=True)
    with pytest.raises(RemoteError, match="does not match"):
        t.run("local", "true")


def test_wrong_key_fails_auth_without_retry(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd["host_line"])
    other = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    sleeps = []
    t = ParamikoTransport({"local": target(sshd, known, identity_file=other, retries=3)}, sleep=sleeps.append)
    with pytest.raises(RemoteError, match="authentication failed"):
        t.run("local", "true")
    assert sleeps == []


def test_refused_port_is_retried_with_backoff(sshd, tmp_path):
    sleeps = []
    t = ParamikoTransport(
        {"local": target(sshd, tmp_path / "kh", port=free_port(), retries=3)}, sleep=sleeps.append
    )
    with pytest.raises(RemoteError, match="cannot connect after 4 attempts"):
        t.run("local", "true")
    assert sleeps == [0.5, 1.0, 2.0]


def test_retry_succeeds_once_the_port_opens(sshd, tmp_path):
    """Refused at first; sshd comes up on that port during the backoff; the retry connects."""
    known = tmp_path / "known_hosts"
    port = free_port()
    known.write_text(sshd["host_line"].replace(f":{sshd['port']} ", f":{port} "))
    config = tmp_path / "sshd_config"
    config.write_text(
        (sshd["dir"] / "sshd_config").read_text().replace(f"Port {sshd['port']}", f"Port {port}")
        .replace(str(sshd["dir"] / "sshd.pid"), str(tmp_path / "sshd.pid"))
    )
    procs = []

    def start_sshd_then_wait(seconds):
        if not procs:
            procs.append(subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL))
        time.sleep(seconds)

    try:
        t = ParamikoTransport({"local": target(sshd, known, port=port, retries=4)}, sleep=start_sshd_then_wait)
        assert t.run("local", "echo up").stdout == "up\n"
        t.close()
        assert len(procs) == 1
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def test_streamed_output_arrives_whole_even_across_reads(transport):
    pieces = []
    text = "é" * 300000  # 600 kB of two-byte characters: reads will split some
    result = transport.run(
        "local", remote_cmd("python3", "-c", "import sys; sys.stdout.write('é' * 300000); sys.stderr.write('x')"),
        on_output=lambda stream, chunk: pieces.append((stream, chunk)),
    )
    assert result.ok and result.stdout == text
    assert "".join(c for s, c in pieces if s == "stdout") == text
    assert "".join(c for s, c in pieces if s == "stderr") == "x"


def test_orch_status_on_unreachable_nodes_exits_1_one_line_each_no_traceback(sshd, tmp_path):
    """Issue 12: paramiko printed a traceback per failed attempt and status exited 0."""
    import sys

    import yaml

    known = tmp_path / "known_hosts"
    known.write_text(sshd["host_line"])
    import socket
    import threading

    # Node a: nothing listens. Node b: something answers that is not sshd (paramiko logs a traceback per try).
    garbage = socket.create_server(("127.0.0.2", 0))

    def hang_up() -> None:
        try:
            while True:
                garbage.accept()[0].close()
        except OSError:  # closed at the end of the test
            pass

    threading.Thread(target=hang_up, daemon=True).start()
    closed = [free_port(), garbage.getsockname()[1]]
    inventory = tmp_path / "down.yaml"
    inventory.write_text(yaml.safe_dump({
        "cluster": "down", "head": "a",
        "ssh": {"identity_file": str(sshd["dir"] / "client_key"), "known_hosts": str(known), "retries": 1,
                "connect_timeout": 3},
        "nodes": [{"name": name, "host": f"127.0.0.{i}", "port": port, "profile": "cpu-onnxruntime"}
                  for i, (name, port) in enumerate(zip("ab", closed), 1)],
    }))
    # Both nodes are in known_hosts under their (closed) ports, so the fail-fast check passes and SSH is tried.
    key = sshd["host_line"].split(None, 1)[1]
    known.write_text("".join(f"[127.0.0.{i}]:{port} {key}" for i, port in enumerate(closed, 1)))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "status", "-i", str(inventory)],
                          capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[:3] for line in lines] == [["orch", " error", " node a"], ["orch", " error", " node b"]]
    assert all("unreachable" in line and "cannot connect after 2 attempts" in line for line in lines)
    assert "Error reading SSH protocol banner" in lines[1]
    garbage.close()
    print(f"\norch status, 2 unreachable nodes: exit {proc.returncode}, {len(proc.stderr.splitlines())} stderr lines, "
          f"{seconds:.1f} s")


def test_orch_status_refuses_a_node_missing_from_known_hosts_before_connecting(sshd, tmp_path):
    import sys

    import yaml

    known = tmp_path / "known_hosts"
    known.write_text("")
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(yaml.safe_dump({
        "cluster": "c", "head": "a", "ssh": {"known_hosts": str(known)},
        "nodes": [{"name": "a", "host": "127.0.0.1", "port": sshd["port"], "profile": "cpu-onnxruntime",
                   "ray_ip": "127.0.0.1"}],
    }))
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "status", "-i", str(inventory)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"orch: error: {known} has no host key for node a ([127.0.0.1]:{sshd['port']}); check the key and add it "
        "(ssh-keyscan -p PORT HOST >> known_hosts), or run again with --trust-new-hosts"
    ]
