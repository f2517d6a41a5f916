"""System description, measurements, --system-meta, log parsing and truncation (no loadgen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import InputError, SubmissionError
from orchestrator.loadgen_log import LoadgenLogError, read_detail, read_logs
from orchestrator.submission.system_desc import REQUIRED_KEYS, load_system_meta, measurements, system_description
from orchestrator.submission.tree import truncate_accuracy_log

GOLDEN = Path(__file__).parent / "golden"

XEON = {
    "hostname": "gpu-a", "arch": "x86_64", "cpu_model": "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz",
    "sockets": 2, "cores_per_socket": 32, "cores": 64, "threads": 128, "cpu_frequency_mhz": 3200.0,
    "caches": "L1d 3 MiB (64 instances), L2 80 MiB (64 instances), L3 96 MiB (2 instances)",
    "memory_bytes": 512 * 2**30, "storage_bytes": 1920 * 10**9, "storage_type": "NVMe SSD",
    "os": "Ubuntu 22.04.4 LTS", "kernel": "5.15.0-105-generic",
    "accelerators": [{"model": "NVIDIA A100-SXM4-80GB", "memory_bytes": 81920 * 2**20}] * 2,
    "python": "3.11.9",
    "frameworks": {"onnxruntime-gpu": "1.18.0", "ray": "2.60.0", "mlcommons-loadgen": "6.0.17", "orch": "0.1.0"},
    "network": [{"iface": "ens1f0", "speed_mbps": 100000, "virtual": False}, {"iface": "docker0", "speed_mbps": None, "virtual": True}],
}  # fmt: skip
EPYC = {
    **XEON, "hostname": "cpu-b", "cpu_model": "AMD EPYC 9654 96-Core Processor", "sockets": 1,
    "cores_per_socket": 96, "cores": 96, "threads": 192, "cpu_frequency_mhz": 3707.8,
    "caches": "L3 384 MiB (12 instances)", "memory_bytes": 768 * 2**30, "accelerators": [],
    "frameworks": {"onnxruntime-gpu": "1.18.0", "ray": "2.60.0", "mlcommons-loadgen": "6.0.17", "orch": "0.1.0"},
}  # fmt: skip


def _nodes():
    return [
        {"name": "node1", "facts": XEON},
        {"name": "node2", "facts": {**XEON, "hostname": "gpu-b"}},
        {"name": "node3", "facts": EPYC},
    ]


def test_system_json_golden_for_a_mixed_cluster():
    system = system_description(_nodes(), submitter="Acme", division="open", system_name="mixed3", backend="onnxruntime-cuda")
    golden = json.loads((GOLDEN / "system_mixed3.json").read_text())
    assert system == golden
    assert list(system) == list(REQUIRED_KEYS)


def test_system_json_single_cpu_node_counts_are_strings_and_unknowns_na():
    facts = {k: None for k in XEON} | {"accelerators": [], "network": None, "frameworks": {}}
    system = system_description([{"name": "n", "facts": facts}], submitter="S", division="open", system_name="x", backend="onnxruntime")
    assert system["number_of_nodes"] == "1" and system["accelerators_per_node"] == "0"
    assert system["host_processor_model_name"] == "N/A" and system["host_memory_capacity"] == "N/A"
    assert system["framework"] == "ONNX Runtime"  # version unknown: not invented
    assert all(isinstance(v, str) and v for v in system.values())


def test_measurements_by_model_and_overrides():
    assert measurements({"model": "bert-large-int8", "model_path": "/c/bert_large_v1_1_fake_quant.onnx"}) == {
        "input_data_types": "int64",
        "retraining": "no",
        "starting_weights_filename": "bert_large_v1_1_fake_quant.onnx",
        "weight_data_types": "int8",
        "weight_transformations": "quantized to int8 (the MLPerf reference int8 BERT-Large ONNX model as published)",
    }
    custom = measurements({"model": "/m/x.onnx", "model_path": "/m/x.onnx"}, {"weight_data_types": "fp16"})
    assert custom["weight_data_types"] == "fp16" and all(custom.values())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: blue\n", "unknown key colour"),
        ("submitter: Other\n", "key submitter cannot be overridden"),
        ("measurements:\n  weights: x\n", "unknown key measurements.weights"),
        ("status: someday\n", "status must be one of"),
        ("system_type: cloud\n", "system_type must be one of"),
        ("cooling: [a, b]\n", "cooling must be a non-empty string"),
        ("- a\n", "must be a mapping"),
        ("cooling: [\n", "not valid YAML"),
    ],
)
def test_system_meta_refusals_name_file_and_key(tmp_path, text, message):
    path = tmp_path / "meta.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_system_meta(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_system_meta_values_land_in_the_json(tmp_path):
    path = tmp_path / "meta.yaml"
    path.write_text("cooling: liquid\nhost_memory_configuration: 16x 32GB DDR5-4800\nsystem_type: datacenter,edge\n")
    system = system_description(_nodes(), submitter="A", division="open", system_name="m", backend="onnxruntime", meta=load_system_meta(path))
    assert system["cooling"] == "liquid" and system["host_memory_configuration"] == "16x 32GB DDR5-4800"
    assert system["system_type"] == "datacenter,edge"


def test_truncation_matches_the_reference_tool(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b"[\n" + b"".join(b'{ "seq_id" : %d, "qsl_idx" : %d, "data" : "%s" },\n' % (i, i, b"AB" * 40) for i in range(500)) + b"]\n")
    out = tmp_path / "t.json"
    truncate_accuracy_log(big, out)
    data = big.read_bytes()
    assert out.read_bytes() == data[:4096] + b"\n\n...\n\n" + data[-4096:]
    small = tmp_path / "small.json"
    small.write_bytes(b"[\n]\n")
    truncate_accuracy_log(small, out)
    assert out.read_bytes() == b"[\n]\n"


def test_detail_log_errors_are_found_by_flag_and_by_key(tmp_path):
    def line(key, value, is_error=False):
        return ":::MLLOG " + json.dumps({"key": key, "value": value, "metadata": {"is_error": is_error}})

    path = tmp_path / "mlperf_log_detail.txt"
    path.write_text("\n".join([line("result_validity", "VALID"), line("error_runtime", "boom"), line("x", "flagged", True), "noise"]) + "\n")
    values, errors = read_detail(path)
    assert values["result_validity"] == "VALID"
    assert errors == ["error_runtime: boom", "x: flagged"]
    # The one reader: run.json's loadgen_errors and orch submit's faults come from the same list.
    (tmp_path / "mlperf_log_summary.txt").write_text("Result is : INVALID\n  Min duration satisfied : NO\n")
    log = read_logs(tmp_path)
    assert log.errors == errors and log.result_valid is False and log.unmet == ["Min duration satisfied"]
    assert log.verdict() == "INVALID (min duration satisfied: no)"
    # An error only the summary counts is an error too.
    path.write_text(line("result_validity", "VALID") + "\n")
    (tmp_path / "mlperf_log_summary.txt").write_text("Result is : VALID\n2 ERRORS encountered. See detailed log.\n")
    assert read_logs(tmp_path).errors == ["mlperf_log_summary.txt: loadgen reports 2 error(s)"]
    path.write_text("not a log\n")
    with pytest.raises(LoadgenLogError, match="no loadgen entries"):
        read_detail(path)


def test_system_json_golden_for_nodes_running_different_backends():
    """node1 ran DeepSparse, node2 ONNX Runtime: framework, sw_notes and hw_notes say which node ran what."""
    cpu = {**EPYC, "accelerators": [], "frameworks": {"ray": "2.60.0", "mlcommons-loadgen": "6.0.17", "orch": "0.1.0"}}
    nodes = [
        {"name": "node1", "backend": "deepsparse", "facts": {**cpu, "hostname": "ds", "frameworks": {**cpu["frameworks"], "deepsparse": "1.8.0"}}},
        {"name": "node2", "backend": "onnxruntime", "facts": {**cpu, "hostname": "ort", "frameworks": {**cpu["frameworks"], "onnxruntime": "1.32.0"}}},
    ]
    system = system_description(nodes, submitter="Acme", division="open", system_name="mixed2", backend="auto")
    golden = json.loads((GOLDEN / "system_mixed_backends.json").read_text())
    assert system == golden
    assert "auto" not in system["framework"] and "auto" not in system["sw_notes"]


def test_system_json_auto_with_one_backend_names_it_not_auto():
    nodes = [{"name": n, "backend": "onnxruntime", "facts": {**EPYC, "frameworks": {"onnxruntime": "1.32.0"}}} for n in ("a", "b")]
    system = system_description(nodes, submitter="A", division="open", system_name="s", backend="auto")
    assert system["framework"] == "ONNX Runtime 1.32.0"
    assert system["sw_notes"].startswith("Benchmarked with orch, backend onnxruntime;")
    assert "runs " not in system["hw_notes"]
