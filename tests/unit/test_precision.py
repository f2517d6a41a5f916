"""--precision: names, what each backend may run, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.bench import config as cfg
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
        ("int8-per-token", "deepsparse", "DeepSparse runs statically quantized (QDQ) models"),
        ("int8-per-token", "onnxruntime-cuda", "--precision int8-per-token is built for ONNX Runtime's CPU provider"),
        ("int4", "onnxruntime", "--precision 'int4' is unknown"),
    ],
)
def test_refusals_name_the_flag(name, backend, words):
    with pytest.raises(InputError) as err:
        cfg.check(BenchConfig(precision=name, backend=backend))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_what_runs_where():
    assert precision.check_precision("fp16", "onnxruntime-cuda") == "fp16"
    assert precision.check_precision("int8", "onnxruntime") == precision.INT8_DEFAULT
    assert precision.check_precision("int8-static", "deepsparse") == "int8-static"
    cfg.check(BenchConfig(precision="int8", backend="auto", cluster_nodes=("a",)))  # each node's backend is checked later


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
    from orchestrator.loadgen_log import LoadgenLog
    from orchestrator.records import AccuracyScore
    from orchestrator.submission.runs import Run, accuracy_faults
    from tests.helpers.records import run_record

    score = AccuracyScore(exact_match=1.0, f1=2.0, examples_scored=10, examples_total=10, log_sha256="a", partial=False)
    below = {"meets": None, "reason": "F1 2.000 is 10.00% of the fp32 F1 20.000: below bert-99 (99%)"}
    log = LoadgenLog(run_dir=tmp_path, summary="", values={})

    def faults(target):
        record = run_record(mode="accuracy", result_valid=None, precision="int8-dynamic", total_sample_count=10,
                            count=10, accuracy=score, accuracy_target=target)
        return accuracy_faults(Run(path=tmp_path, record=record, log=log))

    assert any("precision int8-dynamic: F1 2.000 is 10.00% of the fp32 F1 20.000: below bert-99" in f for f in faults(below))
    assert not any("precision" in f for f in faults({"meets": "bert-99"}))


def test_a_change_to_the_recipe_code_changes_the_variant_cache_key(tmp_path):
    """Cached variants are keyed by a hash of the code that builds them: an edited recipe cannot reuse a stale build."""
    recipe = tmp_path / "per_token.py"
    recipe.write_text("WEIGHT_LEVELS = 63\n")
    before = precision.recipe_key((recipe,))
    assert precision.recipe_key((recipe,)) == before and len(before) == 12
    recipe.write_text("WEIGHT_LEVELS = 127\n")
    assert precision.recipe_key((recipe,)) != before
    # By default it reads the real recipe files (the integration test checks a built variant's name carries it).
    real = tuple(Path(precision.__file__).with_name(n) for n in precision.RECIPE_FILES)
    assert all(p.is_file() for p in real) and precision.recipe_key() == precision.recipe_key(real)
