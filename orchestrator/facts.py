"""Facts about the machine this runs on, for the MLPerf system description.

``collect_facts()`` runs on every node (the bench's actors call it) and its
result travels back in ``run.json``; ``orch submit`` turns the facts of all
nodes into ``systems/<system>.json``. It never fails: whatever cannot be
read is ``None`` (or an empty list), never a guess.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator import hardware

# Distribution names whose versions the system description reports: every
# backend's (from the hardware catalog), then what every node shares.
FRAMEWORK_PACKAGES = (
    *dict.fromkeys(spec.package for spec in hardware.BACKENDS.values()),
    "ray",
    "mlcommons-loadgen",
    "numpy",
    "orch",
)

# Tests point these at fake trees; in production they are the real ones.
PROC = Path("/proc")
SYS = Path("/sys")
ETC = Path("/etc")


def collect_facts() -> dict[str, Any]:
    """Describe this node: CPU, memory, storage, OS, accelerators, software, network.

    Returns:
        A JSON-serialisable dict with the keys hostname, arch, cpu_model,
        sockets, cores_per_socket, cores, threads, cpu_frequency_mhz, caches,
        memory_bytes, storage_bytes, storage_type, os, kernel, accelerators
        (list of {model, memory_bytes}), python, frameworks ({package: version},
        installed ones only) and network (list of {iface, speed_mbps, virtual}).
        Unknown values are None.
    """
    lscpu = _lscpu()
    cpuinfo = _cpuinfo()
    sockets = _int(lscpu.get("Socket(s)")) or _count_distinct(cpuinfo, "physical id")
    cores_per_socket = _int(lscpu.get("Core(s) per socket")) or _int(_first(cpuinfo, "cpu cores"))
    cores = sockets * cores_per_socket if sockets and cores_per_socket else None
    storage_bytes, storage_type = _storage("/")
    return {
        "hostname": socket.gethostname() or None,
        "arch": platform.machine() or None,
        "cpu_model": lscpu.get("Model name") or _first(cpuinfo, "model name"),
        "sockets": sockets,
        "cores_per_socket": cores_per_socket,
        "cores": cores,
        "threads": os.cpu_count(),
        "cpu_frequency_mhz": _cpu_mhz(lscpu, cpuinfo),
        "caches": _caches(lscpu),
        "memory_bytes": _memory_bytes(),
        "storage_bytes": storage_bytes,
        "storage_type": storage_type,
        "os": _os_name(),
        "kernel": platform.release() or None,
        "accelerators": _nvidia_gpus(),
        "python": platform.python_version(),
        "frameworks": _framework_versions(),
        "network": _network(),
    }


def _run(cmd: list[str]) -> str | None:
    """stdout of a short command, or None when it is missing or fails."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _lscpu() -> dict[str, str]:
    """lscpu's fields ("Model name" -> "AMD EPYC"), empty when lscpu is absent."""
    out = _run(["lscpu", "-J"])
    if not out:
        return {}
    try:
        rows = json.loads(out).get("lscpu", [])
    except (json.JSONDecodeError, AttributeError):
        return {}
    fields: dict[str, str] = {}

    def walk(items: list[dict]) -> None:
        for item in items:
            name = str(item.get("field", "")).rstrip(":").strip()
            if name and item.get("data") is not None:
                fields.setdefault(name, str(item["data"]).strip())
            walk(item.get("children", []))

    walk(rows)
    return fields


def _cpuinfo() -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per logical CPU."""
    text = _read(PROC / "cpuinfo") or ""
    cpus = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        if entry:
            cpus.append(entry)
    return cpus


def _first(cpus: list[dict[str, str]], key: str) -> str | None:
    for cpu in cpus:
        if cpu.get(key):
            return cpu[key]
    return None


def _count_distinct(cpus: list[dict[str, str]], key: str) -> int | None:
    values = {cpu[key] for cpu in cpus if key in cpu}
    return len(values) or None


def _cpu_mhz(lscpu: dict[str, str], cpus: list[dict[str, str]]) -> float | None:
    # The rated maximum is what a system description means; the current
    # clock from /proc/cpuinfo is only the fallback (VMs often hide the max).
    for value in (lscpu.get("CPU max MHz"), _first(cpus, "cpu MHz")):
        try:
            return round(float(str(value).replace(",", ".")), 1)
        except (TypeError, ValueError):
            continue
    return None


def _caches(lscpu: dict[str, str]) -> str | None:
    """e.g. "L1d 96 KiB (2 instances), L1i 64 KiB (2 instances), L2 2 MiB (2 instances), L3 32 MiB (1 instance)"."""
    parts = [f"{name} {lscpu[f'{name} cache']}" for name in ("L1d", "L1i", "L2", "L3") if lscpu.get(f"{name} cache")]
    if parts:
        return ", ".join(parts)
    found = []
    for index in sorted((SYS / "devices/system/cpu/cpu0/cache").glob("index*")):
        level, kind, size = (_read(index / n) for n in ("level", "type", "size"))
        if level and size:
            suffix = {"Data": "d", "Instruction": "i"}.get((kind or "").strip(), "")
            found.append(f"L{level.strip()}{suffix} {size.strip()}")
    return ", ".join(found) or None


def _memory_bytes() -> int | None:
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", _read(PROC / "meminfo") or "", re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _storage(path: str) -> tuple[int | None, str | None]:
    """Size of the filesystem holding ``path`` and the kind of disk under it."""
    try:
        total = shutil.disk_usage(path).total
    except OSError:
        total = None
    return total, _disk_type(path)


def _disk_type(path: str) -> str | None:
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    block = SYS / "dev/block" / f"{os.major(dev)}:{os.minor(dev)}"
    try:
        resolved = block.resolve(strict=True)
    except OSError:
        return None  # overlay/tmpfs roots (containers) have no block device
    # A partition's queue/ lives in its parent disk's folder.
    disk = resolved if (resolved / "queue").exists() else resolved.parent
    name = disk.name
    rotational = (_read(disk / "queue/rotational") or "").strip()
    if name.startswith("nvme"):
        return "NVMe SSD"
    if name.startswith("vd") or name.startswith("xvd"):
        # Virtio disks report rotational=1 whatever backs them: say what is known.
        return "virtual disk (virtio)"
    if rotational == "0":
        return "SSD"
    if rotational == "1":
        return "HDD"
    return None


def _os_name() -> str | None:
    text = _read(ETC / "os-release") or ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.MULTILINE)
    if match:
        return match.group(1)
    return platform.system() or None


def _nvidia_gpus() -> list[dict[str, Any]]:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
    gpus = []
    for line in (out or "").splitlines():
        name, sep, mem = line.partition(",")
        if not sep or not name.strip():
            continue  # not the "name, MiB" line asked for
        mib = _int(mem)
        gpus.append({"model": name.strip(), "memory_bytes": mib * 1024 * 1024 if mib is not None else None})
    return gpus


def _framework_versions() -> dict[str, str]:
    versions = {}
    for package in FRAMEWORK_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _network() -> list[dict[str, Any]]:
    """Every interface but loopback, with its link speed (None when the kernel does not say)."""
    interfaces = []
    for iface in sorted((SYS / "class/net").glob("*")):
        if iface.name == "lo":
            continue
        speed = _int(_read(iface / "speed"))
        interfaces.append(
            {
                "iface": iface.name,
                "speed_mbps": speed if speed and speed > 0 else None,
                # No device/ link: veth, bridges, docker0, ifb: not a network card.
                "virtual": not (iface / "device").exists(),
            }
        )
    return interfaces
