"""Tuned layouts: the best layout `orch tune` measured, stored per system and node profile.

A layout is how a node runs the benchmark: workers per node, threads per
worker, batch size, chunk size, precision and backend. `orch tune` stores the
best one it measured in ``<cache>/tuned/<system>__<profile>.json`` with what
it was measured on (model sha256, features key, the profile's hardware
fingerprint, time, command). `orch bench` then uses it for every layout flag
not given on the command line, and says so; it ignores it, with a message
naming what changed, when the model, the data or the node profile differ.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

# Layout field -> the bench flag that sets it (locally, workers are --nodes).
FLAGS = {
    "workers": "--nodes",
    "threads": "--threads",
    "batch_size": "--batch-size",
    "chunk_size": "--chunk-size",
    "precision": "--precision",
    "backend": "--backend",
}
CLUSTER_FLAGS = {**FLAGS, "workers": "--workers-per-node"}
LOCAL_PROFILE = "local"


@dataclasses.dataclass(frozen=True)
class Layout:
    """One way to run a node (None: orch's default for that field)."""

    workers: int = 1
    threads: int | None = None
    batch_size: int = 8
    chunk_size: int | None = None
    precision: str = "fp32"
    backend: str = "onnxruntime"

    def label(self) -> str:
        """A short human-readable form, e.g. ``2w x 1t b2 c- int8-dynamic onnxruntime``."""
        threads = self.threads if self.threads is not None else "-"
        chunk = self.chunk_size if self.chunk_size is not None else "-"
        return f"{self.workers}w x {threads}t b{self.batch_size} c{chunk} {self.precision} {self.backend}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layout:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class Identity:
    """What a tuned layout is valid for.

    Attributes:
        system: the local host name, or ``<cluster>`` for a deployed cluster.
        profile: ``local``, or the inventory's node profile (``cpu-onnxruntime``...).
        fingerprint: a hash of the profile's hardware (CPU model, CPUs, memory; GPUs).
        model_sha256: the fp32 model file's sha256.
        features_key: the SQuAD features' cache key (data set + vocab + parameters).
    """

    system: str
    profile: str
    fingerprint: str
    model_sha256: str
    features_key: str


def fingerprint(parts: Any) -> str:
    """A short stable hash of JSON-able hardware facts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def local_hardware() -> dict[str, Any]:
    """The facts of this machine a layout depends on."""
    from orchestrator.facts import collect_facts

    facts = collect_facts()
    memory = facts.get("memory_bytes")
    return {
        "cpu_model": facts.get("cpu_model"),
        "threads": facts.get("threads"),
        "memory_gib": round(memory / 2**30) if memory else None,
        "accelerators": sorted(a.get("model") or "" for a in facts.get("accelerators") or []),
    }


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _path(system: str, profile: str, cache_dir: Path | None) -> Path:
    from orchestrator.paths import cache_subdir

    folder = Path(cache_dir) if cache_dir is not None else cache_subdir("tuned")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{_safe(system)}__{_safe(profile)}.json"


def store_tuned(identity: Identity, layout: Layout, samples_per_second: float, *, count: int, tried: list[dict[str, Any]],
                command: str, hardware: Any = None, cache_dir: Path | None = None) -> Path:  # fmt: skip
    """Store the best layout of a sweep (replacing the earlier one for this system and profile)."""
    from orchestrator.fileio import atomic_write

    record = {
        "identity": dataclasses.asdict(identity),
        "layout": dataclasses.asdict(layout),
        "samples_per_second": samples_per_second,
        "count": count,
        "hardware": hardware,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "tried": tried,
    }
    path = _path(identity.system, identity.profile, cache_dir)
    atomic_write(path, json.dumps(record, indent=2) + "\n")
    return path


def load_tuned(system: str, profile: str, *, cache_dir: Path | None = None) -> tuple[dict[str, Any] | None, Path]:
    """The stored record for (system, profile) and its path; None when absent or unreadable."""
    path = _path(system, profile, cache_dir)
    try:
        record = json.loads(path.read_text())
        Layout.from_json(record["layout"])
        record["identity"]["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None, path
    return record, path


def stale_reason(record: dict[str, Any], identity: Identity) -> str | None:
    """Why a stored layout does not apply to ``identity`` (None: it applies)."""
    stored = record["identity"]
    if stored.get("model_sha256") != identity.model_sha256:
        return f"the model changed (tuned with {stored.get('model_sha256', '?')[:12]}, now {identity.model_sha256[:12]})"
    if stored.get("features_key") != identity.features_key:
        return f"the data changed (tuned on features {stored.get('features_key', '?')[:12]}, now {identity.features_key[:12]})"
    if stored.get("profile") != identity.profile or stored.get("fingerprint") != identity.fingerprint:
        return (
            f"the node profile changed (tuned on {stored.get('profile')} {stored.get('fingerprint')}, "
            f"now {identity.profile} {identity.fingerprint})"
        )
    return None


def overrides(layout: Layout, given: frozenset[str] | set[str], *, cluster: bool) -> dict[str, Any]:
    """The ``BenchConfig`` fields the layout sets: every layout field whose flag was not given."""
    flags = CLUSTER_FLAGS if cluster else FLAGS
    out: dict[str, Any] = {}
    for name in flags:
        if flags[name] in given:
            continue
        value = getattr(layout, name)
        if name == "workers":
            out["workers_per_node" if cluster else "nodes"] = value
        elif name == "backend" and cluster:
            continue  # a cluster's backend follows its node profile
        else:
            out[name] = value
    return out


def given_flags() -> frozenset[str]:
    """The layout flags given on the current command line (from click's parameter sources)."""
    import click
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return frozenset()
    names = {p.name: p.opts[0] for p in ctx.command.params if p.opts}
    flags = set(FLAGS.values()) | set(CLUSTER_FLAGS.values())
    return frozenset(
        flag for name, flag in names.items()
        if flag in flags and ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
    )  # fmt: skip


def describe(record: dict[str, Any], path: Path, used: dict[str, Any], given: frozenset[str] | set[str]) -> str:
    """The line `orch bench` prints when it uses a tuned layout."""
    layout = Layout.from_json(record["layout"])
    kept = sorted(given & set(FLAGS.values()) | given & set(CLUSTER_FLAGS.values()))
    text = (
        f"using the tuned layout {layout.label()} ({record['samples_per_second']:.1f} samples/s when measured "
        f"{record['measured_at']} by `{record['command']}`; {path})"
    )
    if kept:
        text += f"; overridden by {', '.join(kept)}"
    return text
