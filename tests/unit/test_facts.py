"""collect_facts(): every contract key, JSON-serialisable, unknowns as None, never raises."""

from __future__ import annotations

import json

import pytest

from orchestrator import facts

KEYS = {
    "hostname", "arch", "cpu_model", "sockets", "cores_per_socket", "cores", "threads",
    "cpu_frequency_mhz", "caches", "memory_bytes", "storage_bytes", "storage_type", "os",
    "kernel", "accelerators", "python", "frameworks", "network",
}

CPUINFO = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 0
cpu cores\t: 32
cpu MHz\t\t: 2000.000

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
physical id\t: 1
cpu cores\t: 32
cpu MHz\t\t: 2000.000
"""


def test_real_machine_has_every_key_and_serialises():
    result = facts.collect_facts()
    assert set(result) == KEYS
    json.dumps(result)
    assert result["threads"] and result["threads"] >= 1
    assert result["memory_bytes"] and result["memory_bytes"] > 0
    assert result["frameworks"]["orch"]


@pytest.fixture
def fake_machine(tmp_path, monkeypatch):
    proc, sys_, etc = tmp_path / "proc", tmp_path / "sys", tmp_path / "etc"
    for d in (proc, sys_ / "class/net/eth0/device", sys_ / "class/net/veth1", sys_ / "class/net/lo", etc):
        d.mkdir(parents=True)
    (proc / "cpuinfo").write_text(CPUINFO)
    (proc / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    (etc / "os-release").write_text('NAME="X"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    (sys_ / "class/net/eth0/speed").write_text("25000\n")
    (sys_ / "class/net/veth1/speed").write_text("-1\n")
    monkeypatch.setattr(facts, "PROC", proc)
    monkeypatch.setattr(facts, "SYS", sys_)
    monkeypatch.setattr(facts, "ETC", etc)
    return tmp_path


def test_without_lscpu_or_nvidia_smi_reads_proc(fake_machine, monkeypatch):
    monkeypatch.setattr(facts, "_run", lambda cmd: None)
    result = facts.collect_facts()
    assert result["cpu_model"] == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert result["sockets"] == 2
    assert result["cores_per_socket"] == 32
    assert result["cores"] == 64
    assert result["cpu_frequency_mhz"] == 2000.0
    assert result["memory_bytes"] == 16384000 * 1024
    assert result["os"] == "Ubuntu 22.04.4 LTS"
    assert result["accelerators"] == []
    assert result["caches"] is None
    assert result["network"] == [
        {"iface": "eth0", "speed_mbps": 25000, "virtual": False},
        {"iface": "veth1", "speed_mbps": None, "virtual": True},
    ]


def test_nvidia_smi_and_lscpu_are_parsed(fake_machine, monkeypatch):
    lscpu = {"lscpu": [
        {"field": "Model name:", "data": "AMD EPYC 9654", "children": [
            {"field": "Socket(s):", "data": "1"}, {"field": "Core(s) per socket:", "data": "96"},
            {"field": "CPU max MHz:", "data": "3707.8120"}]},
        {"field": "L2 cache:", "data": "96 MiB (96 instances)"},
    ]}

    def run(cmd):
        if cmd[0] == "lscpu":
            return json.dumps(lscpu)
        if cmd[0] == "nvidia-smi":
            return "NVIDIA H100 80GB HBM3, 81559\nNVIDIA H100 80GB HBM3, 81559\n"
        return None

    monkeypatch.setattr(facts, "_run", run)
    result = facts.collect_facts()
    assert result["cpu_model"] == "AMD EPYC 9654"
    assert (result["sockets"], result["cores_per_socket"], result["cores"]) == (1, 96, 96)
    assert result["cpu_frequency_mhz"] == 3707.8
    assert result["caches"] == "L2 96 MiB (96 instances)"
    assert result["accelerators"] == [{"model": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 * 2**20}] * 2


def test_unreadable_everything_gives_none_not_an_exception(tmp_path, monkeypatch):
    monkeypatch.setattr(facts, "PROC", tmp_path / "nope")
    monkeypatch.setattr(facts, "SYS", tmp_path / "nope")
    monkeypatch.setattr(facts, "ETC", tmp_path / "nope")
    monkeypatch.setattr(facts, "_run", lambda cmd: "not json")
    result = facts.collect_facts()
    assert set(result) == KEYS
    assert result["memory_bytes"] is None and result["cores"] is None and result["network"] == []
    assert result["accelerators"] == []
