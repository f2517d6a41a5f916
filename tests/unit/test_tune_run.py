"""`orch tune` locally with the trials faked: what each trial's bench is asked, the guard's runs, what is stored."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from orchestrator.errors import InputError, Interrupted
from orchestrator.tune import layout, run, trial


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Inputs of 50 samples, a made-up machine, and trials answered from the config instead of run."""
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(layout, "local_hardware", lambda: {"cpu_model": "Test CPU", "threads": 2, "memory_gib": 8, "accelerators": []})
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"a model file")
    inputs = SimpleNamespace(model_path=model, features_key="f" * 64, total=50)
    monkeypatch.setattr("orchestrator.bench.inputs.resolve_inputs", lambda conf, deploy=None: inputs)
    confs = []
    f1 = {"fp32": 50.0, "int8-per-token": 49.95, "int8-dynamic": 49.9, "int8-static": 30.0}

    def answer(conf, *, debug=False):
        confs.append(conf)
        if conf.mode == "accuracy":
            share = f1[conf.precision] / f1["fp32"]
            meets = "bert-99.9" if share >= 0.999 else "bert-99" if share >= 0.99 else None
            return {"mode": "accuracy", "count": conf.count or 50, "f1": f1[conf.precision],
                    "accuracy_target": {"precision": conf.precision, "ratio": share, "meets": meets, "reason": f"{share:.3f}"}}  # fmt: skip
        speed = (20.0 if conf.nodes == 2 else 15.0) * {"int8-dynamic": 1.3, "int8-per-token": 1.2}.get(conf.precision, 1.0)
        speed *= {1: 0.9, 2: 1.0, 4: 0.97, 8: 0.8, 16: 0.7}[conf.batch_size]
        return {"mode": "performance", "samples_per_second": speed}

    monkeypatch.setattr(trial, "run_trial", answer)
    return SimpleNamespace(confs=confs, inputs=inputs, f1=f1)


def test_tune_runs_the_guard_then_the_sweep_and_stores_the_best(fake):
    seen = []
    result = run.tune_local(run.TuneConfig(count=200, backends=("onnxruntime",), command="orch tune"), on_trial=seen.append)
    accuracy = [c for c in fake.confs if c.mode == "accuracy"]
    # One fp32 reference, then each reduced precision, on the whole data set (not PARTIAL).
    assert [c.precision for c in accuracy] == ["fp32", "int8-per-token", "int8-dynamic", "int8-static"]
    assert all(c.count is None and not c.partial_accuracy and c.tuned == "off" for c in accuracy)
    perf = [c for c in fake.confs if c.mode == "performance"]
    assert all(c.count == 200 and c.execution == "test" and c.tuned == "off" for c in perf)  # 200 > 50: samples repeat
    assert "int8-static" not in {c.precision for c in perf}  # refused by the guard: never measured
    assert result["best"]["layout"] == {"workers": 2, "threads": 1, "batch_size": 2, "chunk_size": None,
                                        "precision": "int8-dynamic", "backend": "onnxruntime"}  # fmt: skip
    assert len(seen) == len(result["trials"]) and any("accuracy guard" in (t.error or "") for t in seen)
    stored = json.loads(open(result["stored"]).read())
    assert stored["layout"] == result["best"]["layout"] and stored["command"] == "orch tune"
    assert stored["identity"]["model_sha256"] == result["identity"]["model_sha256"]
    json.dumps(result)  # the --json object is plain JSON


def test_a_smaller_accuracy_count_makes_partial_runs_on_the_same_samples(fake):
    run.tune_local(run.TuneConfig(count=20, accuracy_count=10, precisions=("fp32", "int8-dynamic"), backends=("onnxruntime",),
                                  batch_sizes=(2,), chunk_sizes=(None,)))  # fmt: skip
    accuracy = [c for c in fake.confs if c.mode == "accuracy"]
    assert [(c.precision, c.count, c.partial_accuracy) for c in accuracy] == [("fp32", 10, True), ("int8-dynamic", 10, True)]


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"count": 0}, "--count must be at least 1"),
        ({"accuracy_count": 0}, "--accuracy-count must be at least 1"),
        ({"accuracy_count": 51}, "--accuracy-count 51 is larger than the data set (50 samples)"),
        ({"precisions": ("int8",)}, "--precisions must include fp32"),
        ({"precisions": ("fp32", "int4")}, "--precisions: 'int4' is unknown"),
        ({"backends": ("tensorrt",)}, "tensorrt"),
        ({"batch_sizes": ()}, "--batch-sizes takes positive integers"),
    ],
)
def test_bad_input_is_refused_before_any_trial(fake, changes, words):
    with pytest.raises(InputError, match=None) as err:
        run.tune_local(run.TuneConfig(**changes))
    assert words in str(err.value) and not fake.confs


def test_an_interrupt_stops_the_sweep_instead_of_failing_a_layout(fake, monkeypatch):
    def stopped(conf, *, debug=False):
        if conf.mode == "performance":
            raise Interrupted("interrupted (Ctrl-C): orch tune was stopped during a trial")
        return {"mode": "accuracy", "accuracy_target": {"meets": "bert-99"}}

    monkeypatch.setattr(trial, "run_trial", stopped)
    with pytest.raises(Interrupted):
        run.tune_local(run.TuneConfig(precisions=("fp32",), backends=("onnxruntime",)))


def test_the_table_shows_every_trial_the_best_and_where_it_went(fake):
    from rich.console import Console

    from orchestrator.tune.view import tune_table

    result = run.tune_local(run.TuneConfig(count=200, backends=("onnxruntime",)))
    console = Console(width=250, record=True)
    console.print(tune_table(result))
    text = console.export_text()
    assert text.count("│ onnxruntime │") == len(result["trials"])
    assert "refused by the guard" in text and "below bert-99 (F1 60.00% of fp32)" in text and "bert-99 (F1 99.80% of fp32)" in text
    assert f"* best: {result['best']['label']}" in text and result["stored"] in text.replace("\n", "")


def test_inventory_tune_sweeps_each_profile_on_its_own_nodes_and_stores_it_per_profile(tmp_path, monkeypatch):
    from orchestrator.inventory import parse_inventory

    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    inventory = parse_inventory({
        "cluster": "lab", "ssh": {"user": "root"}, "head": "cpu1",
        "nodes": [
            {"name": "cpu1", "host": "10.0.0.12", "profile": "cpu-onnxruntime", "cpus": 4},
            {"name": "cpu2", "host": "10.0.0.13", "profile": "cpu-onnxruntime", "cpus": 4},
            {"name": "ds1", "host": "10.0.0.14", "profile": "cpu-deepsparse"},
        ],
    }, path=tmp_path / "cluster.yaml")  # fmt: skip
    monkeypatch.setattr("orchestrator.inventory.load_inventory", lambda path: inventory)
    confs = []

    def answer(conf, inventory_path, **kwargs):
        confs.append(conf)
        variant = {"source_model_sha256": "s" * 64}
        if conf.mode == "accuracy":
            return {"count": 50, "model_variant": variant, "features_key": "k" * 64, "accuracy_target": {"meets": "bert-99", "ratio": 0.995}}
        return {"samples_per_second": 10.0 * conf.workers_per_node + conf.batch_size, "model_variant": variant, "features_key": "k" * 64}

    monkeypatch.setattr("orchestrator.bench.on_cluster.run_on_inventory", answer)
    results = run.tune_inventory(run.TuneConfig(inventory=tmp_path / "cluster.yaml", precisions=("fp32",), batch_sizes=(1, 2),
                                                chunk_sizes=(None,)))  # fmt: skip
    assert [r["identity"]["profile"] for r in results] == ["cpu-onnxruntime", "cpu-deepsparse"]
    onnx = [c for c in confs if c.backend == "onnxruntime"]
    assert {c.nodes for c in onnx} == {2} and {c.workers_per_node for c in onnx} == {1, 2, 4}  # 4 CPUs: 1x4, 2x2, 4x1
    assert {c.nodes for c in confs if c.backend == "deepsparse"} == {1}
    assert results[0]["best"]["layout"]["workers"] == 4 and results[0]["stored"].endswith("lab__cpu-onnxruntime.json")
    assert results[1]["stored"].endswith("lab__cpu-deepsparse.json")
