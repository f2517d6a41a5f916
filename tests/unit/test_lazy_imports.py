"""The controller runs `orch --help`, `orch deploy --help`, `orch status --help` without the heavy packages."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["ray", "onnxruntime", "onnx", "mlperf_loadgen", "transformers", "deepsparse", "docker", "paramiko", "matplotlib"]

# Each heavy module is made unimportable; the CLI must still answer.
SCRIPT = """
import sys
for name in {heavy!r}:
    sys.modules[name] = None
from orchestrator.cli import main
for argv in (["--help"], ["deploy", "--help"], ["status", "--help"], ["bench", "--help"], ["submit", "--help"],
             ["images", "--help"], ["sandbox", "--help"], ["fetch", "--help"], ["report", "--help"], ["up", "--help"], ["down", "--help"]):
    code = main(argv)
    assert code == 0, (argv, code)
loaded = [name for name in {heavy!r} if sys.modules.get(name) is not None]
assert not loaded, loaded
print("ok")
"""


def test_cli_help_needs_none_of_the_heavy_packages():
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(heavy=HEAVY)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("ok")
