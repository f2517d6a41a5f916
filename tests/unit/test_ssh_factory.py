"""The one transport factory: the controller's SSH files checked before any connection, paramiko kept quiet."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from orchestrator.errors import InputError
from orchestrator.inventory import parse_inventory
from orchestrator.ssh import ParamikoTransport, open_transport
from orchestrator.ssh.factory import quiet_paramiko

# A real ed25519 public key (the key itself is irrelevant: only its presence is checked).
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def inventory(tmp_path, **ssh):
    data = {
        "cluster": "lab", "head": "n1", "ssh": {"known_hosts": str(tmp_path / "known_hosts"), **ssh},
        "nodes": [
            {"name": "n1", "host": "10.0.0.1", "profile": "cpu-onnxruntime"},
            {"name": "n2", "host": "10.0.0.2", "port": 2222, "profile": "cpu-onnxruntime"},
        ],
    }
    return parse_inventory(data, path=tmp_path / "c.yaml")


def test_missing_known_hosts_is_refused_before_connecting(tmp_path):
    with pytest.raises(InputError) as info:
        open_transport(inventory(tmp_path))
    assert "known_hosts file" in str(info.value) and "does not exist" in str(info.value)
    assert "--trust-new-hosts" in str(info.value)


def test_nodes_missing_from_known_hosts_are_named_in_one_line(tmp_path):
    (tmp_path / "known_hosts").write_text(f"10.0.0.1 {KEY}\n")
    with pytest.raises(InputError) as info:
        open_transport(inventory(tmp_path))
    message = str(info.value)
    assert "has no host key for node n2 ([10.0.0.2]:2222)" in message and "n1" not in message.split("hint")[0]
    assert "\n" not in message


def test_hashed_known_hosts_entries_count(tmp_path):
    import paramiko

    hashed = paramiko.HostKeys.hash_host("[10.0.0.2]:2222")
    (tmp_path / "known_hosts").write_text(f"10.0.0.1 {KEY}\n{hashed} {KEY}\n")
    transport = open_transport(inventory(tmp_path))
    assert isinstance(transport, ParamikoTransport) and set(transport.targets) == {"n1", "n2"}
    assert transport.trust_new_hosts is False


def test_trust_new_hosts_needs_no_known_hosts_yet(tmp_path):
    transport = open_transport(inventory(tmp_path), trust_new_hosts=True)
    assert transport.trust_new_hosts is True


def test_missing_identity_file_is_named(tmp_path):
    (tmp_path / "known_hosts").write_text(f"10.0.0.1 {KEY}\n[10.0.0.2]:2222 {KEY}\n")
    with pytest.raises(InputError, match=r"node n1: identity_file .*nope does not exist"):
        open_transport(inventory(tmp_path, identity_file="nope"))


def test_paramiko_logging_is_quiet_unless_debug():
    logger = logging.getLogger("paramiko")
    try:
        quiet_paramiko(debug=False)
        assert not logger.propagate and any(isinstance(h, logging.NullHandler) for h in logger.handlers)
        quiet_paramiko(debug=True)
        assert logger.propagate and not any(isinstance(h, logging.NullHandler) for h in logger.handlers)
    finally:
        quiet_paramiko(debug=False)


def test_a_closed_transport_opens_no_new_connection(tmp_path):
    from orchestrator.errors import RemoteError

    transport = open_transport(inventory(tmp_path), trust_new_hosts=True)
    transport.close()
    with pytest.raises(RemoteError, match="node n1: the SSH connection was closed"):
        transport.run("n1", "true")


def test_bench_on_cluster_and_deploy_use_the_factory():
    """No module builds its own ParamikoTransport: the factory is the one place."""
    root = Path(__file__).resolve().parents[2] / "orchestrator"
    users = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if "ParamikoTransport(" in p.read_text() or "ParamikoTransport.from_inventory(" in p.read_text()
    )
    assert users == ["ssh/factory.py"]
