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


def test_the_submission_names_the_variant_and_its_fp32_source():
    from orchestrator.submission.system_desc import measurements

    meta = {
        "model": "demo", "model_path": "/cache/models/demo-abc.onnx",
        "model_variant": {
            "precision": "int8-dynamic", "source_model_path": "/cache/models/demo-abc.onnx",
            "weight_data_types": "int8", "weight_transformations": "quantized by orch with ONNX Runtime quantize_dynamic",
        },
    }  # fmt: skip
    m = measurements(meta)
    assert m["weight_data_types"] == "int8" and m["starting_weights_filename"] == "demo-abc.onnx"
    assert m["weight_transformations"].startswith("quantized by orch with ONNX Runtime quantize_dynamic; from: not BERT-Large")
    assert measurements({"model": "demo", "model_path": "/x/demo.onnx", "model_variant": {"precision": "fp32"}})["weight_data_types"] == "fp32"


def test_orch_submit_refuses_an_int8_accuracy_run_below_target(tmp_path):
    from types import SimpleNamespace

    from orchestrator.submission.runs import accuracy_faults

    meta = {"precision": "int8-dynamic", "total_sample_count": 10, "count": 10, "exact_match": 1.0, "f1": 2.0,
            "accuracy_target": {"meets": None, "reason": "F1 2.000 is 10.00% of the fp32 F1 20.000: below bert-99 (99%)"}}  # fmt: skip
    run = SimpleNamespace(meta=meta, path=tmp_path, detail=SimpleNamespace(values={}))
    faults = accuracy_faults(run)
    assert any("precision int8-dynamic: F1 2.000 is 10.00% of the fp32 F1 20.000: below bert-99" in f for f in faults)
    meta["accuracy_target"] = {"meets": "bert-99"}
    assert not any("precision" in f for f in accuracy_faults(run))
