"""--precision: names, what each backend may run, and clear refusals."""

from __future__ import annotations

import pytest

from orchestrator.bench.config import BenchConfig
from orchestrator.errors import InputError
from orchestrator.models import precision


def test_int8_means_the_kept_method():
    assert precision.canonical("int8") == precision.INT8_DEFAULT
    assert precision.canonical("int8-static") == "int8-static"


@pytest.mark.parametrize(
    "name, backend, words",
    [
        ("fp16", "onnxruntime", "--precision fp16 needs --backend onnxruntime-cuda"),
        ("fp16", "deepsparse", "--precision fp16 needs --backend onnxruntime-cuda"),
        ("bf16", "onnxruntime-cuda", "--precision bf16: no orch backend runs bf16"),
        ("int8-dynamic", "deepsparse", "DeepSparse runs statically quantized (QDQ) models"),
        ("int4", "onnxruntime", "--precision 'int4' is unknown"),
    ],
)
def test_refusals_name_the_flag(name, backend, words):
    with pytest.raises(InputError) as err:
        BenchConfig(precision=name, backend=backend).check()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_what_runs_where():
    assert precision.check_precision("fp16", "onnxruntime-cuda") == "fp16"
    assert precision.check_precision("int8", "onnxruntime") == precision.INT8_DEFAULT
    assert precision.check_precision("int8-static", "deepsparse") == "int8-static"
    BenchConfig(precision="int8", backend="auto", cluster_nodes=("a",)).check()  # each node's backend is checked later


def test_calibration_rows_spread_over_the_data():
    rows = precision.calibration_rows(5147)
    assert len(rows) == precision.CALIBRATION_SAMPLES and rows[0] == 0 and rows[-1] == 5146
    assert list(precision.calibration_rows(5)) == [0, 1, 2, 3, 4]
