"""Answers cross between nodes with different numpy majors (issue 8, item 3).

The deepsparse image has numpy 1.26, the others numpy 2.x. Ray pickles with
protocol 5, and a protocol-5 pickle of a numpy-2 array names
``numpy._core.numeric._frombuffer``, which numpy 1.26 lacks (1.26 only has
a partial ``numpy._core`` shim, enough for protocol-4 pickles). So workers
send ``orchestrator.bench.payload.encode`` dicts (bytes + dtype + shape)
inside a ``ChunkResult``; these tests pickle them in one interpreter and
unpickle + decode them in the other, both ways, and show that a plain array
pickle does fail.

The other interpreter comes from ``ORCH_NUMPY1_PYTHON`` (for example
``/work/venv-ds/bin/python``, made by ``pip install 'orch[deepsparse]'``);
without it, or when both interpreters have the same numpy major, the tests
skip with the reason.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.bench.dispatcher import ChunkResult
from orchestrator.bench.payload import decode, encode

REPO = Path(__file__).resolve().parents[2]
ENV_VAR = "ORCH_NUMPY1_PYTHON"

# Run in the other interpreter, with this checkout first on sys.path.
_MAKE = """
import pickle, sys
import numpy as np
from orchestrator.bench.dispatcher import ChunkResult
from orchestrator.bench.payload import encode
logits = (np.arange(3 * 384 * 2, dtype=np.float32) / 7).reshape(3, 384, 2)
spans = np.array([[5, 9], [-1, 383], [0, 0]], dtype=np.int16)
sys.stdout.buffer.write(pickle.dumps([ChunkResult(7, encode(logits), 0.5), ChunkResult(8, encode(spans), 0.25)], protocol=5))
"""
_READ = """
import hashlib, json, pickle, sys
import numpy as np
from orchestrator.bench.payload import decode
results = pickle.loads(sys.stdin.buffer.read())
out = []
for r in results:
    a = decode(r.payload)
    out.append({"chunk_id": r.chunk_id, "seconds": r.seconds, "dtype": a.dtype.str, "shape": list(a.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()})
print(json.dumps({"numpy": np.__version__, "results": out}))
"""
_PLAIN_LOAD = """
import pickle, sys
try:
    pickle.loads(sys.stdin.buffer.read())
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
    sys.exit(3)
print("loaded")
"""


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    logits = (np.arange(3 * 384 * 2, dtype=np.float32) / 7).reshape(3, 384, 2)
    spans = np.array([[5, 9], [-1, 383], [0, 0]], dtype=np.int16)
    return logits, spans


def _run(python: str, code: str, data: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([python, "-c", code], input=data, capture_output=True, env=env, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{python} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def other_python() -> str:
    python = os.environ.get(ENV_VAR)
    if not python:
        pytest.skip(f"{ENV_VAR} is not set (an interpreter with the other numpy major, e.g. /work/venv-ds/bin/python)")
    if not os.access(python, os.X_OK):
        pytest.skip(f"{ENV_VAR}={python} is not an executable")
    version = _run(python, "import numpy; print(numpy.__version__)").stdout.decode().strip()
    if version.split(".")[0] == np.__version__.split(".")[0]:
        pytest.skip(f"{python} has numpy {version}, the same major as this interpreter's {np.__version__}")
    return python


def test_encoded_answers_cross_from_this_numpy_to_the_other(other_python):
    logits, spans = _arrays()
    data = pickle.dumps([ChunkResult(7, encode(logits), 0.5), ChunkResult(8, encode(spans), 0.25)], protocol=5)
    found = json.loads(_run(other_python, _READ, data).stdout.decode().strip().splitlines()[-1])
    assert found["numpy"].split(".")[0] != np.__version__.split(".")[0]
    import hashlib

    expected = [
        {"chunk_id": 7, "seconds": 0.5, "dtype": "<f4", "shape": [3, 384, 2], "sha256": hashlib.sha256(logits.tobytes()).hexdigest()},
        {"chunk_id": 8, "seconds": 0.25, "dtype": "<i2", "shape": [3, 2], "sha256": hashlib.sha256(spans.tobytes()).hexdigest()},
    ]
    assert found["results"] == expected


def test_encoded_answers_cross_from_the_other_numpy_to_this(other_python):
    data = _run(other_python, _MAKE).stdout
    results = pickle.loads(data)
    logits, spans = _arrays()
    assert [r.chunk_id for r in results] == [7, 8]
    got_logits, got_spans = decode(results[0].payload), decode(results[1].payload)
    assert got_logits.dtype == np.float32 and got_spans.dtype == np.int16
    np.testing.assert_array_equal(got_logits, logits)
    np.testing.assert_array_equal(got_spans, spans)


def test_a_plain_numpy2_array_pickle_fails_under_numpy1(other_python):
    """Why payloads are encoded: Ray's protocol-5 pickle of a numpy-2 array does not load under numpy 1.x."""
    logits, _ = _arrays()
    plain = "import pickle, sys, numpy as np; sys.stdout.buffer.write(pickle.dumps((np.arange(3 * 384 * 2, dtype=np.float32) / 7).reshape(3, 384, 2), protocol=5))"
    if np.__version__.startswith("1."):
        # This interpreter is the numpy-1 side: the other one pickles.
        data = _run(other_python, plain).stdout
        with pytest.raises(ModuleNotFoundError, match=r"numpy\._core"):
            pickle.loads(data)
    else:
        data = pickle.dumps(logits, protocol=5)
        proc = _run(other_python, _PLAIN_LOAD, data, check=False)
        assert proc.returncode == 3, proc.stdout.decode() + proc.stderr.decode()
        assert "ModuleNotFoundError" in proc.stdout.decode() and "numpy._core" in proc.stdout.decode()
