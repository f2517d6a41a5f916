"""orch fetch against a real HTTP server on 127.0.0.1: resume, restarts, drops, checksums."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from orchestrator import fetch as fetch_mod
from orchestrator.cli import main
from orchestrator.errors import ChecksumError, OrchError
from orchestrator.fetch import ARTIFACTS, Artifact, fetch


@dataclass
class _Served:
    """What the server serves and how it misbehaves; records every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    mode: str = "range"  # range | ignore-range | drop-once | drop-always | busy
    drops_left: int = 1
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)  # (path, Range, status)


def _handler(served: _Served):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            body = served.files.get(self.path)
            asked = self.headers.get("Range")
            if served.mode == "busy":
                served.requests.append((self.path, asked, 503))
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if body is None:
                served.requests.append((self.path, asked, 404))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            if asked and served.mode != "ignore-range":
                start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(body) and asked and served.mode != "ignore-range":
                served.requests.append((self.path, asked, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206 if start else 200
            served.requests.append((self.path, asked, status))
            self.send_response(status)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("Accept-Ranges", "none" if served.mode == "ignore-range" else "bytes")
            self.end_headers()
            rest = body[start:]
            drop = served.mode == "drop-always" or (served.mode == "drop-once" and served.drops_left > 0)
            if drop:
                served.drops_left -= 1
                # Promise the whole body, send part of it, hang up.
                self.wfile.write(rest[: len(rest) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(rest)

    return Handler


@pytest.fixture
def server():
    served = _Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    monkeypatch.setattr(fetch_mod, "RETRY_WAIT_S", 0.0)
    monkeypatch.setattr(fetch_mod, "TIMEOUT_S", 10.0)
    monkeypatch.setattr(fetch_mod, "CHUNK_BYTES", 64 * 1024)


def _payload(n: int = 700_000, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 9)) % 251 for i in range(n))


def _artifact(served: _Served, body: bytes, *, name: str = "blob", sha256: str | None = "auto", md5=None, size="auto"):
    served.files[f"/{name}.bin"] = body
    return Artifact(
        name=name,
        filename=f"{name}.bin",
        url=f"{served.base}/{name}.bin",
        sha256=hashlib.sha256(body).hexdigest() if sha256 == "auto" else sha256,
        size=len(body) if size == "auto" else size,
        description="test blob",
        md5=md5,
    )


def test_fresh_download_is_verified_and_renamed(server, tmp_path):
    body = _payload()
    table = {"blob": _artifact(server, body)}
    (path,) = fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert path == tmp_path / "blob" / "blob.bin"
    assert path.read_bytes() == body
    assert not (tmp_path / "blob" / "blob.bin.part").exists()
    assert server.requests == [("/blob.bin", None, 200)]


def test_progress_bar_runs(server, tmp_path, capsys):
    table = {"blob": _artifact(server, _payload(200_000))}
    fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=True)
    assert "blob" in capsys.readouterr().err


def test_resume_from_a_partial_part_file_uses_range(server, tmp_path):
    body = _payload()
    table = {"blob": _artifact(server, body)}
    part = tmp_path / "blob" / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:123_457])
    (path,) = fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert path.read_bytes() == body
    assert server.requests == [("/blob.bin", "bytes=123457-", 206)]
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.mode = "ignore-range"
    body = _payload()
    table = {"blob": _artifact(server, body)}
    part = tmp_path / "blob" / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\xff" * 50_000)  # wrong bytes: appending would corrupt the file
    (path,) = fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert path.read_bytes() == body
    assert server.requests == [("/blob.bin", "bytes=50000-", 200)]


def test_complete_part_file_gets_416_and_is_kept(server, tmp_path):
    body = _payload(10_000)
    table = {"blob": _artifact(server, body, size=None)}
    part = tmp_path / "blob" / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(body)
    (path,) = fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert path.read_bytes() == body
    assert server.requests == [("/blob.bin", "bytes=10000-", 416)]


def test_dropped_connection_resumes_where_it_stopped(server, tmp_path):
    server.mode = "drop-once"
    body = _payload()
    table = {"blob": _artifact(server, body)}
    (path,) = fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert path.read_bytes() == body
    half = len(body) // 2
    assert server.requests == [("/blob.bin", None, 200), ("/blob.bin", f"bytes={half}-", 206)]


def test_connection_that_keeps_dropping_fails_with_one_line_and_keeps_the_part(server, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "RETRIES", 2)
    server.mode = "drop-always"
    body = _payload()
    table = {"blob": _artifact(server, body)}
    with pytest.raises(OrchError) as err:
        fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    message = str(err.value)
    assert "downloading blob failed after 3 tries" in message and "\n" not in message
    assert len(server.requests) == 3
    # Each try got half of what was left: the part holds the bytes so far, for the next run.
    part = tmp_path / "blob" / "blob.bin.part"
    assert body.startswith(part.read_bytes()) and part.stat().st_size > len(body) // 2
    assert not (tmp_path / "blob" / "blob.bin").exists()
    # The next run resumes and finishes.
    server.mode = "range"
    kept = part.stat().st_size
    (path,) = fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert path.read_bytes() == body
    assert server.requests[-1] == ("/blob.bin", f"bytes={kept}-", 206)


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    body = _payload()
    wrong = hashlib.sha256(b"something else").hexdigest()
    table = {"blob": _artifact(server, body, sha256=wrong)}
    with pytest.raises(ChecksumError) as err:
        fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert err.value.expected == wrong
    assert err.value.actual == hashlib.sha256(body).hexdigest()
    assert f"blob.bin from {server.base}/blob.bin has sha256 " in str(err.value)
    assert [p.name for p in (tmp_path / "blob").iterdir()] == []  # no file, no lock left


def test_concurrent_fetches_of_one_file_download_it_once(server, tmp_path):
    body = _payload()
    table = {"blob": _artifact(server, body)}
    results, errors = [], []

    def run():
        try:
            results.append(fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)[0])
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert [p.read_bytes() == body for p in results] == [True, True, True]
    assert server.requests == [("/blob.bin", None, 200)]


def test_md5_only_artifact_is_verified(server, tmp_path):
    body = _payload(50_000)
    good = {"blob": _artifact(server, body, sha256=None, md5=hashlib.md5(body).hexdigest(), size=None)}
    (path,) = fetch(["blob"], cache_dir=tmp_path / "a", artifacts=good, progress=False)
    assert path.read_bytes() == body
    bad = {"blob": _artifact(server, body, sha256=None, md5="f" * 32, size=None)}
    with pytest.raises(ChecksumError, match="has md5"):
        fetch(["blob"], cache_dir=tmp_path / "b", artifacts=bad, progress=False)


def test_present_verified_file_is_not_downloaded_again(server, tmp_path):
    body = _payload(30_000)
    table = {"blob": _artifact(server, body)}
    fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert len(server.requests) == 1


def test_corrupt_present_file_is_replaced_and_said(server, tmp_path, capsys):
    body = _payload(30_000)
    table = {"blob": _artifact(server, body)}
    dest = tmp_path / "blob" / "blob.bin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"\0" * len(body))
    fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert dest.read_bytes() == body
    assert "replacing it" in capsys.readouterr().err
    assert len(server.requests) == 1


def test_http_404_is_one_line_and_not_retried(server, tmp_path):
    table = {"blob": Artifact("blob", "blob.bin", f"{server.base}/gone.bin", "0" * 64, None, "missing")}
    with pytest.raises(OrchError, match=r"HTTP 404 .* for http://127\.0\.0\.1:\d+/gone\.bin") as err:
        fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert "\n" not in str(err.value)
    assert len(server.requests) == 1


def test_server_errors_are_retried(server, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "RETRIES", 1)
    table = {"blob": _artifact(server, _payload(1000))}
    server.mode = "busy"
    with pytest.raises(OrchError, match=r"failed after 2 tries: HTTP 503 .* for http://127"):
        fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert [status for _, _, status in server.requests] == [503, 503]


def test_refused_connection_fails_at_once_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "RETRY_WAIT_S", 30.0)  # a retry would be seen in the time taken
    table = {"blob": Artifact("blob", "blob.bin", "http://127.0.0.1:9/blob.bin", "0" * 64, None, "nowhere")}
    calls = []
    real = fetch_mod.urllib.request.urlopen
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(OrchError) as err:
        fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert str(err.value).startswith("downloading blob failed: cannot reach 127.0.0.1 (connection refused)")
    assert "resume" not in str(err.value) and len(calls) == 1
    assert list((tmp_path / "blob").iterdir()) == []  # no .part, no .lock


def test_a_name_that_does_not_resolve_fails_at_once(tmp_path, monkeypatch):
    import socket

    def no_dns(*args, **kwargs):
        raise fetch_mod.urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    calls = []
    monkeypatch.setattr(fetch_mod.urllib.request, "urlopen", lambda *a, **k: calls.append(1) or no_dns())
    table = {"blob": Artifact("blob", "blob.bin", "https://zenodo.example/blob.bin", "0" * 64, None, "nowhere")}
    with pytest.raises(OrchError, match=r"cannot reach zenodo.example \(the name does not resolve"):
        fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert len(calls) == 1


def test_dropped_connections_are_retried_and_the_message_names_the_kept_part(server, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod, "RETRIES", 1)
    monkeypatch.setattr(fetch_mod, "RETRY_WAIT_S", 0.0)
    body = _payload(200_000)
    table = {"blob": _artifact(server, body)}
    server.mode = "busy"
    with pytest.raises(OrchError) as err:
        fetch(["blob"], cache_dir=tmp_path, artifacts=table, progress=False)
    assert "resume from" not in str(err.value)  # nothing was kept, so nothing to resume


def test_cli_downloads_what_a_model_needs(server, tmp_path, monkeypatch, capsys):
    # Point the real table at the local server: small stand-ins for each file.
    bodies = {}
    for i, name in enumerate(ARTIFACTS):
        real = ARTIFACTS[name]
        body = _payload(20_000 + i, seed=i)
        bodies[name] = body
        server.files[f"/{real.filename}"] = body
        monkeypatch.setitem(
            ARTIFACTS,
            name,
            Artifact(name, real.filename, f"{server.base}/{real.filename}", hashlib.sha256(body).hexdigest(),
                     len(body), real.description, requires=real.requires),
        )
    cache = tmp_path / "cache"
    assert main(["fetch", "bert-large-int8", "--cache-dir", str(cache), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in ("bert-large-int8", "vocab", "squad-dev"):
        path = cache / name / ARTIFACTS[name].filename
        assert path.read_bytes() == bodies[name]
        assert f"{name}: {path}" in out
    assert not (cache / "bert-large").exists()
    # Default: all four; the three present ones are not fetched again.
    assert main(["fetch", "--cache-dir", str(cache), "--no-progress"]) == 0
    assert sorted(p for p, _, _ in server.requests) == sorted(
        ["/bert_large_v1_1_fake_quant.onnx", "/vocab.txt", "/dev-v1.1.json", "/model.onnx"]
    )
    # ORCH_CACHE_DIR is the default root.
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "env-cache"))
    assert main(["fetch", "vocab", "--no-progress"]) == 0
    assert (tmp_path / "env-cache" / "downloads" / "vocab" / "vocab.txt").read_bytes() == bodies["vocab"]
    assert os.environ["ORCH_CACHE_DIR"] == str(tmp_path / "env-cache")
