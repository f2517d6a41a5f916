"""Choosing nodes for `orch bench --inventory` and the driver command run on the head (golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.bench.config import BenchConfig
from orchestrator.bench.on_cluster import _relocate, choose_nodes
from orchestrator.errors import InputError
from orchestrator.inventory import parse_inventory

INVENTORY = {
    "cluster": "lab",
    "ssh": {"user": "root"},
    "head": "gpu1",
    "nodes": [
        {"name": "gpu1", "host": "10.0.0.11", "profile": "cuda-onnxruntime", "gpus": 2},
        {"name": "cpu1", "host": "10.0.0.12", "profile": "cpu-onnxruntime"},
        {"name": "cpu2", "host": "10.0.0.13", "profile": "cpu-onnxruntime"},
        {"name": "ds1", "host": "10.0.0.14", "profile": "cpu-deepsparse"},
    ],
}


@pytest.fixture
def inventory(tmp_path):
    return parse_inventory(INVENTORY, path=tmp_path / "cluster.yaml")


def test_explicit_backend_keeps_only_nodes_that_can_run_it(inventory):
    assert choose_nodes(inventory, "onnxruntime", None, source="c.yaml") == ["cpu1", "cpu2"]
    assert choose_nodes(inventory, "onnxruntime", 1, source="c.yaml") == ["cpu1"]
    assert choose_nodes(inventory, "onnxruntime-cuda", None, source="c.yaml") == ["gpu1"]
    assert choose_nodes(inventory, "deepsparse", None, source="c.yaml") == ["ds1"]


def test_auto_takes_every_node(inventory):
    assert choose_nodes(inventory, "auto", None, source="c.yaml") == ["gpu1", "cpu1", "cpu2", "ds1"]


def test_too_few_capable_nodes_is_one_clear_error(inventory):
    with pytest.raises(InputError) as err:
        choose_nodes(inventory, "onnxruntime", 3, source="c.yaml")
    assert str(err.value).startswith("--nodes 3: c.yaml has 2 node(s) that can run backend onnxruntime (cpu1, cpu2)")


def _non_default(name, field):
    """A value for every BenchConfig field that differs from its default (by its type)."""
    import typing

    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return next(v for v in typing.get_args(annotation) if v != field.default)
    if typing.get_origin(annotation) in (tuple, dict):  # not a Union: the container itself
        args = [annotation]
    else:
        args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    kind = args[0]
    origin = typing.get_origin(kind)
    if kind is bool:
        return not field.default
    if kind is int:
        return 7
    if kind is float:
        return 3.5
    if kind is str:
        return {"precision": "int8", "tuned": "off-but-not-default"}.get(name, f"x-{name}")
    if kind is Path:
        return Path(f"/p/{name}")
    if origin is dict:
        return {"host_memory_capacity": "64 GB"}
    if origin is tuple:
        return ("n1", "n2") if name == "cluster_nodes" else ("--batch-size",)
    raise AssertionError(f"no test value for BenchConfig.{name}: {annotation}")


def test_every_configuration_field_reaches_the_driver(monkeypatch, tmp_path):
    """Generated over BenchConfig's fields: a field added later is covered without editing this test."""
    from orchestrator.bench import driver, on_cluster, runner
    from orchestrator.records import DriverConfig, Faults

    values = {name: _non_default(name, field) for name, field in BenchConfig.model_fields.items()}
    conf = BenchConfig(**values)
    record = on_cluster.driver_config(conf, ["cpu1", "cpu2"], str(tmp_path / "run"), debug=True,
                                      faults=Faults(chunk_delay=0.5))
    # Through the file the controller puts on the head, read back by the driver.
    path = tmp_path / "run.driver.json"
    record.write(path)
    seen = {}

    def fake_run_bench(conf, *, debug, live, faults):
        seen.update(conf=conf, debug=debug, faults=faults)
        return {"mode": conf.mode}

    monkeypatch.setattr(runner, "run_bench", fake_run_bench)
    assert driver.drive(path) == 0
    got = seen["conf"]
    set_by_controller = {"nodes": 2, "cluster_nodes": ("cpu1", "cpu2"), "force": True, "out": tmp_path / "run"}
    for name in BenchConfig.model_fields:
        expected = set_by_controller.get(name, values[name])
        assert getattr(got, name) == expected, name
    assert seen["debug"] is True and seen["faults"] == Faults(chunk_delay=0.5)
    result = DriverConfig  # the result record is beside the config
    assert (tmp_path / "run.result.json").is_file() and result


def test_driver_errors_come_back_as_their_own_class(monkeypatch, tmp_path):
    from orchestrator.bench import driver, on_cluster, runner
    from orchestrator.errors import DatasetError, rebuild_error
    from orchestrator.records import DriverResult

    def failing(conf, **_):
        raise DatasetError("data set /x is not SQuAD v1.1", hint="give a SQuAD file")

    monkeypatch.setattr(runner, "run_bench", failing)
    path = tmp_path / "r.driver.json"
    on_cluster.driver_config(BenchConfig(), ["a"], str(tmp_path / "r")).write(path)
    assert driver.drive(path) == 2
    result = DriverResult.from_json((tmp_path / "r.result.json").read_text(), source="test")
    assert not result.ok and result.error.type == "DatasetError" and result.error.hint == "give a SQuAD file"
    error = rebuild_error(result.error.type, result.error.message, result.error.hint)
    assert isinstance(error, DatasetError) and str(error) == "data set /x is not SQuAD v1.1; give a SQuAD file"


def test_relocate_points_run_dirs_at_the_local_copy():
    summary = {"run_dir": "/data/runs/x", "runs": [{"run_dir": "/data/runs/x/accuracy"}], "model_path": "/data/models/m.onnx"}
    local = _relocate(summary, "/data/runs/x", Path("/home/u/out"), "orch bench -i c.yaml")
    assert local["run_dir"] == "/home/u/out"
    assert local["runs"][0]["run_dir"] == "/home/u/out/accuracy"
    assert local["model_path"] == "/data/models/m.onnx"  # the path used on the node stays as it was


def test_the_head_drivers_ceiling_warning_is_shown_without_debug():
    from orchestrator.bench import on_cluster
    from orchestrator.bench.view import PROGRESS_PREFIX, RemoteProgress

    progress, shown = RemoteProgress(), []
    warning = "orch: warning: the planned rate of 2,000,000 samples/s exceeds what this driver was measured to complete"
    for line in (warning, "(raylet) some Ray log line", PROGRESS_PREFIX + '{"done": 5}'):
        on_cluster.driver_line(line, progress, debug=False, write=shown.append)
    assert shown == [warning + "\n"]  # said before the run, as a local run says it; Ray's log only with --debug
    assert progress.latest == {"done": 5}
    on_cluster.driver_line("(raylet) some Ray log line", progress, debug=True, write=shown.append)
    assert shown[-1] == "(raylet) some Ray log line\n"
