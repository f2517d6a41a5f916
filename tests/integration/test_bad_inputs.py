"""Bad input, every command: exit 2, one error line, no traceback, nothing touched, no Ray started.

Each case runs `orch` as a user would (a subprocess, in a folder of files
prepared once), with Ray's temp dir pointed at an empty folder of its own:
when the case is over that folder is still empty, so the refusal came before
Ray started. Every file that was there before is still there, unchanged, and
no run folder (partial or failed) appeared.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers.cli import ROOT
from tests.helpers.signals import interruptible

EARLIER_RUN_MARKER = {"record": "run-marker", "version": 1, "orch_version": "0", "kind": "run",
                      "created_at": "2026-01-01T00:00:00+00:00", "command": "orch bench", "state": "complete"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad and good files the cases point at."""
    base = tmp_path_factory.mktemp("bad")
    (base / "notsquad.json").write_text('{"data": 5}')
    (base / "vocab.txt").write_text("hello\nworld\n")
    (base / "model.onnx").write_text("this is a text file, not a model\n")
    (base / "model.pt").write_bytes(b"\x80\x02torch")
    (base / "a-file").write_text("not a folder")
    (base / "mine").mkdir()
    (base / "mine" / "file.txt").write_text("my own work")
    (base / "earlier").mkdir()
    (base / "earlier" / ".orch-run.json").write_text(json.dumps(EARLIER_RUN_MARKER))
    (base / "earlier" / "run.json").write_text("{}")
    (base / "meta-unknown.yaml").write_text("coolant: water\n")
    (base / "norun").mkdir()
    (base / "norun" / "user.conf").write_text("x\n")
    node = {"name": "n1", "host": "10.99.0.1", "profile": "cpu-onnxruntime"}
    inventories = {
        "inv-unknown-key.yaml": {"cluster": "c", "ssh": {"user": "root"}, "head": "n1", "nodes": [{**node, "colour": "red"}]},
        "inv-password.yaml": {"cluster": "c", "ssh": {"user": "root", "password": "hunter2"}, "head": "n1", "nodes": [node]},
        "inv-no-head.yaml": {"cluster": "c", "ssh": {"user": "root"}, "head": "n9", "nodes": [node]},
        "inv-bad-profile.yaml": {"cluster": "c", "ssh": {"user": "root"}, "head": "n1",
                                 "nodes": [{**node, "profile": "tpu-jax"}]},
    }
    for name, data in inventories.items():
        (base / name).write_text(json.dumps(data))  # YAML is a superset of JSON
    (base / "inv-not-yaml.yaml").write_text("nodes: [unclosed\n")
    return base


D = "{dir}"  # replaced by the files folder

CASES = [
    # usage errors: the framework's message, exit 2
    ("bench-mistyped-flag", ["bench", "--nodez", "2"], "No such option: --nodez"),
    ("bench-not-an-integer", ["bench", "--nodes", "two"], "'--nodes'"),
    ("bench-flag-without-value", ["bench", "--nodes"], "requires an argument"),
    ("unknown-command", ["bnech"], "No such command 'bnech'"),
    ("no-command", [], "Usage: orch"),
    ("submit-no-arguments", ["submit"], "Missing argument"),
    ("submit-no-submitter", ["submit", f"{D}/norun", "--system-name", "s"], "Missing option '--submitter'"),
    ("images-unknown-subcommand", ["images", "frobnicate"], "No such command 'frobnicate'"),
    ("sandbox-up-no-nodes", ["sandbox", "up"], "Missing option '--nodes'"),
    ("deploy-no-inventory", ["deploy"], "Missing option '--inventory'"),
    ("status-no-inventory", ["status"], "Missing option '--inventory'"),
    ("bench-debug-after-command", ["bench", "--debug", "--nodez", "1"], "No such option: --nodez"),
    # bench: flags
    ("bench-nodes-0", ["bench", "--nodes", "0"], "--nodes must be at least 1"),
    ("bench-count-0", ["bench", "--count", "0"], "--count must be at least 1"),
    ("bench-count-too-large", ["bench", "--mode", "accuracy", "--partial-accuracy", "--count", "100000"],
     "--count 100000 is larger than the data set"),
    ("bench-duration-without-rate", ["bench", "--duration", "5"], "--duration needs the expected samples/s"),
    ("bench-duration-with-count", ["bench", "--duration", "5", "--count", "10"], "without --count"),
    ("bench-synthetic-bad-spec", ["bench", "--backend", "synthetic:speed=3"], "speed=3"),
    ("bench-synthetic-submission", ["bench", "--backend", "synthetic", "--mode", "submission", "--submitter", "T"],
     "never a submission"),
    ("bench-unknown-backend", ["bench", "--backend", "bogus"], "unknown backend 'bogus'"),
    ("bench-cuda-without-cuda", ["bench", "--backend", "onnxruntime-cuda"], "no CUDAExecutionProvider"),
    ("bench-auto-without-inventory", ["bench", "--backend", "auto"], "--backend auto follows the node profiles"),
    ("bench-unknown-mode", ["bench", "--mode", "fast"], "--mode 'fast' is unknown"),
    ("bench-unknown-execution", ["bench", "--execution", "quick"], "--execution 'quick' is unknown"),
    ("bench-scenario", ["bench", "--scenario", "Server"], "--scenario 'Server' is not supported"),
    ("bench-batch-0", ["bench", "--batch-size", "0"], "--batch-size must be at least 1"),
    ("bench-threads-0", ["bench", "--threads", "0"], "--threads must be at least 1"),
    ("bench-chunk-0", ["bench", "--chunk-size", "0"], "--chunk-size must be at least 1"),
    ("bench-negative-qps", ["bench", "--target-qps", "-1"], "--target-qps must be positive"),
    ("bench-count-in-valid", ["bench", "--execution", "valid", "--count", "10"], "--count is for --execution test"),
    ("bench-accuracy-subset", ["bench", "--mode", "accuracy", "--count", "10"], "add --partial-accuracy"),
    ("bench-allow-invalid-alone", ["bench", "--allow-invalid"], "--allow-invalid is for --mode submission"),
    ("bench-trust-without-inventory", ["bench", "--trust-new-hosts"], "--trust-new-hosts is for --inventory"),
    # bench: submission flags
    ("bench-submission-no-submitter", ["bench", "--mode", "submission"], "needs --submitter"),
    ("bench-submitter-with-space", ["bench", "--mode", "submission", "--submitter", "my team"], "--submitter 'my team'"),
    ("bench-division", ["bench", "--mode", "submission", "--submitter", "T", "--division", "network"], "--division 'network'"),
    ("bench-closed-division", ["bench", "--mode", "submission", "--submitter", "T", "--division", "closed"], "TEST01"),
    ("bench-system-meta-missing", ["bench", "--mode", "submission", "--submitter", "T", "--system-meta", f"{D}/nope.yaml"],
     "nope.yaml: cannot read"),
    ("bench-system-meta-unknown-key", ["bench", "--mode", "submission", "--submitter", "T",
                                       "--system-meta", f"{D}/meta-unknown.yaml"], "unknown key coolant"),
    # bench: files
    ("bench-dataset-missing", ["bench", "--dataset", "/nonexistent/squad.json"], "/nonexistent/squad.json"),
    ("bench-dataset-not-squad", ["bench", "--dataset", f"{D}/notsquad.json"], "notsquad.json is not SQuAD v1.1"),
    ("bench-vocab-not-bert", ["bench", "--vocab", f"{D}/vocab.txt"], "vocab.txt is not a BERT WordPiece vocab"),
    ("bench-model-text-file", ["bench", "--model", f"{D}/model.onnx"], "model.onnx is not an ONNX model"),
    ("bench-model-missing", ["bench", "--model", f"{D}/nothere.onnx"], "no such file"),
    ("bench-model-not-onnx", ["bench", "--model", f"{D}/model.pt"], "model.pt is not an .onnx file"),
    # bench: --out
    ("bench-out-is-a-file", ["bench", "--out", f"{D}/a-file"], "is a file, not a folder"),
    ("bench-out-not-a-run-forced", ["bench", "--out", f"{D}/mine", "--force"], "is not an orch run directory; nothing in it was touched"),
    ("bench-out-home-forced", ["bench", "--out", "~", "--force"], "is not an orch run directory"),
    ("bench-out-earlier-run", ["bench", "--out", f"{D}/earlier"], "already holds an earlier run"),
    ("bench-out-unwritable", ["bench", "--out", "/proc/orch-run"], "cannot write in /proc"),
    # bench --inventory: checked before any connection
    ("bench-inventory-missing", ["bench", "--inventory", f"{D}/nope.yaml"], "nope.yaml"),
    ("bench-inventory-password", ["bench", "--inventory", f"{D}/inv-password.yaml"], "password"),
    ("bench-inventory-with-dataset", ["bench", "--inventory", f"{D}/inv-password.yaml", "--dataset", "x.json"],
     "--dataset/--vocab with --inventory"),
    # submit
    ("submit-missing-dir", ["submit", f"{D}/nothere", "--submitter", "A", "--system-name", "s"], "nothere: not a directory"),
    ("submit-incomplete-run", ["submit", f"{D}/norun", "--submitter", "A", "--system-name", "s"], "no run.json"),
    ("submit-bad-name", ["submit", f"{D}/norun", "--submitter", "a b", "--system-name", "s"], "--submitter 'a b'"),
    ("submit-closed", ["submit", f"{D}/norun", "--submitter", "A", "--system-name", "s", "--division", "closed"], "TEST01"),
    ("submit-system-meta", ["submit", f"{D}/norun", "--submitter", "A", "--system-name", "s",
                            "--system-meta", f"{D}/meta-unknown.yaml"], "unknown key coolant"),
    # deploy / status (the inventory is checked before any connection)
    ("deploy-inventory-missing", ["deploy", "--inventory", f"{D}/nope.yaml"], "nope.yaml"),
    ("deploy-unknown-key", ["deploy", "--inventory", f"{D}/inv-unknown-key.yaml"], "colour"),
    ("deploy-password", ["deploy", "--inventory", f"{D}/inv-password.yaml"], "password"),
    ("deploy-unknown-head", ["deploy", "--inventory", f"{D}/inv-no-head.yaml"], "n9"),
    ("deploy-bad-profile", ["deploy", "--inventory", f"{D}/inv-bad-profile.yaml"], "tpu-jax"),
    ("deploy-not-yaml", ["deploy", "--inventory", f"{D}/inv-not-yaml.yaml"], "inv-not-yaml.yaml"),
    ("status-password", ["status", "--inventory", f"{D}/inv-password.yaml"], "password"),
    ("teardown-unknown-key", ["teardown", "--inventory", f"{D}/inv-unknown-key.yaml"], "colour"),
    # fetch
    ("fetch-unknown-name", ["fetch", "bert-huge"], "bert-huge"),
    ("fetch-from-missing", ["fetch", "vocab", "--from", f"{D}/nothere"], "nothere"),
    # images / sandbox
    ("images-unknown-profile", ["images", "build", "--profile", "tpu-jax"], "tpu-jax"),
    ("images-bad-platform", ["images", "build", "--platform", "linux/s390x"], "s390x"),
    ("sandbox-up-0-nodes", ["sandbox", "up", "--nodes", "0"], "--nodes"),
    ("sandbox-up-too-many", ["sandbox", "up", "--nodes", "99"], "--nodes"),
]


def _snapshot(folder: Path) -> dict[str, str]:
    seen = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            seen[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            seen[str(path.relative_to(folder))] = "dir"
    return seen


@pytest.mark.parametrize("name, args, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(files, tmp_path, name, args, needle):
    assert len(CASES) >= 40
    args = [a.replace(D, str(files)) for a in args]
    ray_tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))
    before = _snapshot(files)
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "ORCH_CACHE_DIR": os.environ["ORCH_CACHE_DIR"]}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("orch: error:", "Error:"))]
    usage = [line for line in proc.stderr.splitlines() if line.startswith("Usage:")]
    if name == "no-command":
        assert usage and needle in proc.stderr + proc.stdout
    else:
        assert len(errors) == 1 and needle in errors[0], proc.stderr[-2000:]
    if errors and errors[0].startswith("orch: error:"):
        assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr
    else:  # the framework's own usage message: its error line and the usage hint
        assert usage or "--help' for help." in proc.stderr, proc.stderr
    assert _snapshot(files) == before  # nothing deleted or overwritten
    assert list(tmp_path.iterdir()) == []  # no run folder, partial or failed
    assert list(ray_tmp.iterdir()) == []  # refused before Ray started
    os.rmdir(ray_tmp)


def test_ctrl_c_during_a_download_keeps_the_part_and_no_lock(tmp_path):
    """An interrupted fetch: exit 130, one line, the partial download kept for a resume, no lock file."""
    import http.server
    import threading

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
            try:
                for _ in range(10_000):
                    self.wfile.write(b"x" * 1000)
                    self.wfile.flush()
                    time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = (
        "import sys\n"
        "from orchestrator import fetch\n"
        "from orchestrator.cli import main\n"
        f"fetch.ARTIFACTS['vocab'] = fetch.Artifact('vocab', 'vocab.txt', 'http://127.0.0.1:{server.server_port}/v', "
        "'0' * 64, 10_000_000, 'slow')\n"
        f"sys.exit(main(['fetch', 'vocab', '--cache-dir', {str(tmp_path)!r}, '--no-progress']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)
    part = tmp_path / "vocab" / "vocab.txt.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    server.shutdown()
    assert proc.returncode == 130, (stdout, stderr)
    assert [line for line in stderr.splitlines() if line.strip()] == ["orch: error: interrupted (Ctrl-C)"], (stdout, stderr)
    assert part.stat().st_size > 0  # kept: the next fetch resumes from it
    assert not (tmp_path / "vocab" / "vocab.txt.lock").exists()
