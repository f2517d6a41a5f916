"""Tuned layouts: used by default, overridden by any flag, ignored (saying why) when model, data or profile changed."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from orchestrator.bench.config import BenchConfig
from orchestrator.tune import apply, layout
from orchestrator.tune.layout import Identity, Layout


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(layout, "local_hardware", lambda: {"cpu_model": "Test CPU", "threads": 2, "memory_gib": 24, "accelerators": []})
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really a model, but it has a sha256")
    return SimpleNamespace(model_path=model, features_key="f" * 64)


def _store(inputs, **changes) -> Identity:
    conf = BenchConfig(tuned="auto")
    identity, _, hardware = apply.identity_for(conf, inputs)
    identity = dataclasses.replace(identity, **changes)
    best = Layout(workers=2, threads=1, batch_size=2, chunk_size=16, precision="int8-dynamic", backend="onnxruntime")
    layout.store_tuned(identity, best, 123.4, count=600, tried=[], command="orch tune", hardware=hardware)
    return identity


def test_the_stored_layout_is_used_by_default(inputs):
    _store(inputs)
    conf, info = apply.tuned_conf(BenchConfig(nodes=1, tuned="auto"), inputs)
    assert (conf.nodes, conf.threads, conf.batch_size, conf.chunk_size, conf.precision) == (2, 1, 2, 16, "int8-dynamic")
    assert info["source"] == "tuned" and info["message"].startswith("using the tuned layout 2w x 1t b2 c16 int8-dynamic")
    assert "123.4 samples/s" in info["message"] and "orch tune" in info["message"]
    # The decision travels with the config: a child run does not look it up (or print it) again.
    again, info2 = apply.tuned_conf(conf, inputs)
    assert again == conf and info2["source"] == "tuned" and info2["echo"] is False


def test_flags_given_override_the_stored_layout(inputs):
    _store(inputs)
    given = frozenset({"--batch-size", "--precision"})
    conf, info = apply.tuned_conf(BenchConfig(nodes=1, batch_size=8, precision="fp32", tuned="auto", given=given), inputs)
    assert (conf.nodes, conf.threads, conf.batch_size, conf.chunk_size, conf.precision) == (2, 1, 8, 16, "fp32")
    assert "overridden by --batch-size, --precision" in info["message"]


def test_off_looks_nothing_up(inputs):
    _store(inputs)
    conf, info = apply.tuned_conf(BenchConfig(nodes=1, tuned="off"), inputs)
    assert conf.nodes == 1 and conf.batch_size == 8 and info["source"] == "flags and defaults" and info["message"] is None


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model_sha256": "0" * 64}, "the model changed"),
        ({"features_key": "0" * 64}, "the data changed"),
        ({"fingerprint": "0" * 16}, "the node profile changed"),
    ],
)
def test_a_stale_layout_is_ignored_with_the_reason(inputs, change, words):
    _store(inputs, **change)
    conf, info = apply.tuned_conf(BenchConfig(nodes=1, tuned="auto"), inputs)
    assert conf.nodes == 1 and conf.batch_size == 8 and conf.precision == "fp32"
    assert info["source"] == "flags and defaults"
    assert "is ignored: " + words in info["message"] and "run `orch tune` again" in info["message"]


def test_a_new_machine_profile_is_seen_through_the_hardware(inputs, monkeypatch):
    _store(inputs)
    monkeypatch.setattr(layout, "local_hardware", lambda: {"cpu_model": "Other CPU", "threads": 64, "memory_gib": 256, "accelerators": []})
    conf, info = apply.tuned_conf(BenchConfig(nodes=1, tuned="auto"), inputs)
    assert conf.nodes == 1 and "the node profile changed" in info["message"]


def test_no_stored_layout_says_how_to_get_one(inputs):
    conf, info = apply.tuned_conf(BenchConfig(nodes=1, tuned="auto"), inputs)
    assert conf.nodes == 1 and "run `orch tune`" in info["message"]


def test_cluster_layouts_set_workers_per_node_and_keep_the_profile_backend():
    best = Layout(workers=3, threads=2, batch_size=4, chunk_size=None, precision="int8-dynamic", backend="deepsparse")
    assert layout.overrides(best, frozenset({"--threads"}), cluster=True) == {
        "workers_per_node": 3, "batch_size": 4, "chunk_size": None, "precision": "int8-dynamic",
    }  # fmt: skip
    assert layout.overrides(best, frozenset({"--nodes"}), cluster=False)["backend"] == "deepsparse"
    assert "nodes" not in layout.overrides(best, frozenset({"--nodes"}), cluster=False)


def test_the_controller_record_reaches_the_driver(inputs, monkeypatch, tmp_path):
    identity = _store(inputs)
    sent = json.loads(apply.controller_record(identity.system, identity.profile))
    assert sent["record"]["layout"]["batch_size"] == 2 and sent["path"].endswith(".json")
