"""deepsparse inside the ``cpu-deepsparse`` image against onnxruntime on the host (needs a Docker engine).

This is where CI runs the deepsparse comparison for real: the host (numpy 2,
onnxruntime) computes the demo model's logits on the demo data; the container
(deepsparse 1.8, numpy 1.26, no network) runs the same model file on the same
data through the ``deepsparse`` backend and writes its logits to a mounted
folder. Logits must agree on real positions and EM/F1 must be equal.
Skipped with a reason when no engine answers.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from orchestrator.images.build import build_image

from .test_images_docker import base, client  # noqa: F401  (fixtures: engine, base image)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(2400)]

ATOL = 1e-3  # as in test_deepsparse_backend.py: observed ~1e-6
BATCH_SIZE = 4

_IN_CONTAINER = f"""
import json, os
import numpy as np
from orchestrator.backends import get_backend
from orchestrator.backends.batching import predict
from orchestrator.models.demo import demo_dataset_path, demo_vocab_path
from orchestrator.squad.library import load_features
features = load_features(demo_dataset_path(), demo_vocab_path())
backend = get_backend("deepsparse")
backend.load("/io/model.onnx", threads=2, batch_size={BATCH_SIZE})
logits = predict(backend, features.input_ids, features.input_mask, features.segment_ids, features.lengths, batch_size={BATCH_SIZE})
np.savez("/io/deepsparse.npz", logits=logits, input_ids=features.input_ids, lengths=features.lengths)
print(json.dumps({{"numpy": np.__version__, "device": backend.device_info()}}))
"""


@pytest.fixture(scope="module")
def deepsparse_image(client, base):  # noqa: F811
    return build_image("cpu-deepsparse", base_image=base, client=client).plan.tag


def test_deepsparse_in_its_image_matches_onnxruntime_on_the_host(client, deepsparse_image, tmp_path):  # noqa: F811
    from orchestrator.backends import get_backend
    from orchestrator.backends.batching import predict
    from orchestrator.models.demo import demo_dataset_path, demo_model_path, demo_vocab_path
    from orchestrator.squad.accuracy import score_logits
    from orchestrator.squad.library import load_features

    io = tmp_path / "io"
    io.mkdir()
    shutil.copyfile(demo_model_path(), io / "model.onnx")  # the very same model bytes on both sides
    features = load_features(demo_dataset_path(), demo_vocab_path())
    backend = get_backend("onnxruntime")
    backend.load(io / "model.onnx", threads=2, batch_size=BATCH_SIZE)
    reference = predict(backend, features.input_ids, features.input_mask, features.segment_ids, features.lengths, batch_size=BATCH_SIZE)
    np.savez(io / "onnxruntime.npz", logits=reference)  # kept beside the container's answer for inspection

    container = client.containers.run(
        deepsparse_image, ["python", "-c", _IN_CONTAINER], detach=True, network_mode="none", shm_size="1g",
        volumes={str(io): {"bind": "/io", "mode": "rw"}},
    )
    try:
        status = container.wait(timeout=1200)
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
    finally:
        container.remove(force=True)
    assert status["StatusCode"] == 0, f"deepsparse run in {deepsparse_image} exited {status['StatusCode']}:\n{logs[-4000:]}"
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["numpy"].startswith("1.") and report["device"]["deepsparse"].startswith("1.8")
    # The fitted head's window (Pad, shifted Slices and their Adds over the head's few output
    # columns) is the one part deepsparse 1.8 runs outside its optimized engine: measured 0.9865 of
    # the nodes here with the graph of commit 42386ef (0.9966 with the older windowed copy of the
    # states, which ran no faster in deepsparse and 4% slower in onnxruntime; 1.0 with a window of
    # 1). Recasting the window (zeros slab + Concat, one Conv over positions, one MatMul per layer)
    # made the 1.8 compiler assert, so the fraction is checked against what was measured, not 1.0.
    assert report["device"]["fraction_of_supported_ops"] >= 0.98, report["device"]

    answer = np.load(io / "deepsparse.npz")
    # Same features on both sides (same data set and vocabulary, tokenized under both numpy majors).
    np.testing.assert_array_equal(answer["input_ids"], features.input_ids)
    np.testing.assert_array_equal(answer["lengths"], features.lengths)
    got = answer["logits"]
    real = np.arange(got.shape[1])[None, :] < features.lengths[:, None]
    diff = np.abs(got - reference)[real]
    assert diff.max() < ATOL, f"max |deepsparse - onnxruntime| on real positions is {diff.max():.2e}"
    ours = score_logits(features, {i: got[i] for i in range(len(features))})
    theirs = score_logits(features, {i: reference[i] for i in range(len(features))})
    assert ours == theirs
