"""The demo bundle (model, vocab, data set, cached features) shipped over a real sshd."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from orchestrator.deploy.bundle import build_bundle
from orchestrator.deploy.facts import FirewallFacts, NodeFacts
from orchestrator.deploy.plan import _copy_files
from orchestrator.deploy.runner import copy_files
from orchestrator.inventory import parse_inventory
from orchestrator.ssh import ParamikoTransport

from .local_sshd import local_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    yield from local_sshd(tmp_path_factory)


def test_demo_bundle_lists_model_vocab_data_and_features_in_cache_layout():
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    payload = build_bundle("demo")
    relatives = [f.relative for f in payload.files]
    assert payload.model_file.startswith("cache/models/") and payload.model_file.endswith(".onnx")
    assert payload.vocab_file.endswith("vocab.txt") and payload.dataset_file.endswith(".json")
    features = [r for r in relatives if r.startswith("cache/features/")]
    assert {Path(r).suffix for r in features} == {".npz", ".pkl"}
    for f in payload.files:
        assert hashlib.sha256(f.local.read_bytes()).hexdigest() == f.sha256 and f.size == f.local.stat().st_size


def test_ship_bundle_over_ssh_then_nothing_to_send(sshd, tmp_path):
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    payload = build_bundle("demo")
    known = tmp_path / "known_hosts"
    known.write_text(sshd["host_line"])
    data_dir = tmp_path / "node data"
    inv = parse_inventory(
        {
            "cluster": "t",
            "head": "local",
            "ssh": {"identity_file": str(sshd["dir"] / "client_key"), "known_hosts": str(known), "retries": 0},
            "nodes": [{"name": "local", "host": "127.0.0.1", "port": sshd["port"], "profile": "cpu-onnxruntime",
                       "data_dir": str(data_dir)}],
        },
        path=tmp_path / "c.yaml",
    )
    node = inv.node("local")

    def ship(transport):
        """What deploy does for files: read the node's manifest, sizes and deploy.json, plan, copy."""
        from orchestrator.deploy import commands
        from orchestrator.deploy.bundle import remote_manifest_command, remote_sizes_command

        got = transport.run("local", remote_manifest_command(node))
        current = transport.run("local", f"cat '{data_dir}/deploy.json'")
        facts = NodeFacts("local", "x86_64", "", "", {}, "127.0.0.1", "", None, FirewallFacts(),
                          manifest=got.stdout if got.ok else None,
                          sizes=transport.run("local", remote_sizes_command(node, payload)).stdout,
                          deploy_json=current.stdout if current.ok else None)
        step = _copy_files(inv, node, facts, payload, {"local": "127.0.0.1"})
        if step is not None:
            copy_files(transport, node, step, on_bytes=sent_bytes.append)
        assert commands.DEPLOY_JSON == "deploy.json"
        return list(step.files) if step else []

    with ParamikoTransport.from_inventory(inv) as transport:
        sent_bytes = []
        sent = ship(transport)
        assert len(sent) == len(payload.files) and sum(sent_bytes) >= payload.total_bytes
        for f in payload.files:
            assert hashlib.sha256((data_dir / f.relative).read_bytes()).hexdigest() == f.sha256
        info = json.loads((data_dir / "deploy.json").read_text())
        assert info["model_path"] == "/data/" + payload.model_file and info["cache_dir"] == "/data/cache"
        manifest = (data_dir / ".orch" / "manifest.json").read_text()
        assert ship(transport) == []
        # A file deleted on the node is noticed (size check), even though the manifest lists it.
        (data_dir / payload.vocab_file).unlink()
        again = ship(transport)
        assert [f.relative for f in again] == [payload.vocab_file]
        assert (data_dir / ".orch" / "manifest.json").read_text() == manifest
