"""The MLPerf system description (``systems/<system>.json``) from node facts.

Every field the checker requires is written. Counts are strings ("0"),
because the checker takes an integer 0 for an empty answer; what cannot be
known from the nodes is a truthful "N/A" (or comes from ``--system-meta``).
Nodes may differ: a field that differs lists each value with its node
count, e.g. "Intel Xeon Gold 6338 (2 nodes) + AMD EPYC 9654 (1 node)", and
``hw_notes`` describes every node.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from orchestrator import hardware
from orchestrator.errors import InputError

# The checker's SYSTEM_DESC_REQUIRED_FIELDS (tools/submission, v6.x), in its order.
REQUIRED_KEYS = (
    "division", "submitter", "status", "system_name", "number_of_nodes",
    "host_processor_model_name", "host_processors_per_node", "host_processor_core_count",
    "host_memory_capacity", "host_storage_capacity", "host_storage_type",
    "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack",
    "host_processor_frequency", "host_processor_caches", "host_memory_configuration",
    "host_processor_interconnect", "host_networking", "host_networking_topology",
    "accelerator_frequency", "accelerator_host_interconnect", "accelerator_interconnect",
    "accelerator_interconnect_topology", "accelerator_memory_configuration",
    "accelerator_on-chip_memories", "cooling", "hw_notes", "sw_notes",
    "host_network_card_count", "system_type_detail",
)  # fmt: skip

# Set from flags and from the runs: overriding them would break the tree.
FIXED_KEYS = ("division", "submitter", "system_name", "number_of_nodes")

VALID_STATUS = ("available", "preview", "rdi")
VALID_SYSTEM_TYPES = ("datacenter", "edge", "datacenter,edge", "edge,datacenter")

# bert-99 belongs to the edge suite only in v6.x (its datacenter entry is
# gone); the open division accepts any valid system_type, so "edge" is the
# truthful default and also the one a closed entry would need.
DEFAULT_SYSTEM_TYPE = "edge"

# The measurements.json keys the checker requires (SYSTEM_IMP_REQUIRED_FILES).
MEASUREMENT_KEYS = (
    "input_data_types",
    "retraining",
    "starting_weights_filename",
    "weight_data_types",
    "weight_transformations",
)

# run.json backend -> (framework name, the distribution whose version names it), from the hardware catalog.
BACKEND_PACKAGES = {name: (spec.framework, spec.package) for name, spec in hardware.BACKENDS.items()}

NA = "N/A"


def load_system_meta(path: Path) -> dict[str, Any]:
    """Read a ``--system-meta`` YAML file of overrides.

    Top-level keys are system-description keys (any required key but
    division, submitter, system_name and number_of_nodes) and an optional
    ``measurements`` mapping with measurements.json keys. Values are
    scalars.

    Raises:
        InputError: unreadable YAML, or an unknown or fixed key (the message
            names the file and the key).
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise InputError(f"--system-meta {path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"--system-meta {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise InputError(f"--system-meta {path}: must be a mapping of system-description keys to values")
    for key, value in data.items():
        if key == "measurements":
            if not isinstance(value, dict):
                raise InputError(f"--system-meta {path}: \"measurements\" must be a mapping")
            for sub, subvalue in value.items():
                if sub not in MEASUREMENT_KEYS:
                    raise InputError(
                        f"--system-meta {path}: unknown key measurements.{sub}",
                        hint=f"allowed: {', '.join(MEASUREMENT_KEYS)}",
                    )
                _check_scalar(path, f"measurements.{sub}", subvalue)
            continue
        if key in FIXED_KEYS:
            raise InputError(f"--system-meta {path}: key {key} cannot be overridden (it comes from the flags and the runs)")
        if key not in REQUIRED_KEYS:
            raise InputError(f"--system-meta {path}: unknown key {key}", hint="use the MLPerf system-description key names")
        _check_scalar(path, key, value)
    if "status" in data and str(data["status"]).lower() not in VALID_STATUS:
        raise InputError(f"--system-meta {path}: status must be one of {', '.join(VALID_STATUS)}")
    if "system_type" in data and str(data["system_type"]) not in VALID_SYSTEM_TYPES:
        raise InputError(f"--system-meta {path}: system_type must be one of {', '.join(VALID_SYSTEM_TYPES)}")
    return data


def _check_scalar(path: Path, key: str, value: Any) -> None:
    if isinstance(value, (dict, list)) or value is None or str(value).strip() == "":
        raise InputError(f"--system-meta {path}: {key} must be a non-empty string or number")


def _one_entry_per_host(per_node: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge entries that ran on the same machine (same hostname and backend).

    ``orch bench --nodes N`` without an inventory runs N workers on one
    machine: that is one node of hardware, not N, and the system JSON must
    say so.
    """
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for i, node in enumerate(per_node):
        host = (node.get("facts") or {}).get("hostname")
        key = (host, node.get("backend")) if host else ("#", i)
        if key in merged:
            merged[key]["name"] = f"{merged[key]['name']}+{node.get('name')}"
        else:
            merged[key] = dict(node)
    return list(merged.values())


def _node_name(node: dict[str, Any], index: int) -> str:
    """A node's name, with its workers when several shared it."""
    name = str(node.get("name") or f"node{index + 1}")
    workers = node.get("workers") or []
    return f"{name}, workers {'+'.join(workers)}" if len(workers) > 1 else name


def system_description(
    per_node: list[dict[str, Any]],
    *,
    submitter: str,
    division: str,
    system_name: str,
    backend: str,
    meta: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The system JSON for the nodes that took part.

    Args:
        per_node: run.json ``per_node`` entries (each with ``name`` and ``facts``).
        submitter, division, system_name: as in the tree's directory names.
        backend: run.json ``backend``: names the framework of nodes whose
            entry has no ``backend`` of its own (each node's own wins, so a
            mixed cluster is described node by node).
        meta: overrides from ``load_system_meta`` (its ``measurements`` key is ignored here).

    Returns:
        Every required key, all values strings.
    """
    per_node = _one_entry_per_host(per_node)
    facts = [node.get("facts") or {} for node in per_node]
    names = [_node_name(node, i) for i, node in enumerate(per_node)]
    accelerators = [f.get("accelerators") or [] for f in facts]
    accel_models = [", ".join(sorted({a.get("model") or NA for a in acc})) if acc else "none" for acc in accelerators]
    accel_memory = [_bytes(acc[0].get("memory_bytes")) if acc else "none" for acc in accelerators]
    # A mixed cluster runs a backend per node (run.json per_node[].backend).
    backends = [str(node.get("backend") or backend) for node in per_node]
    packages = [BACKEND_PACKAGES.get(b, (b, b)) for b in backends]
    frameworks = [_join(label, (f.get("frameworks") or {}).get(package)) or label for (label, package), f in zip(packages, facts)]
    framework = _describe(frameworks)
    software = [
        _join_all(f"{pkg} {ver}" for pkg, ver in sorted((f.get("frameworks") or {}).items()) if pkg != package)
        for (_, package), f in zip(packages, facts)
    ]
    mixed = len(set(backends)) > 1
    system = {
        "division": division,
        "submitter": submitter,
        "status": "available",
        "system_name": system_name,
        "number_of_nodes": str(len(per_node)),
        "host_processor_model_name": _describe([f.get("cpu_model") for f in facts]),
        "host_processors_per_node": _describe([f.get("sockets") for f in facts]),
        "host_processor_core_count": _describe([f.get("cores_per_socket") for f in facts]),
        "host_memory_capacity": _describe([_bytes(f.get("memory_bytes")) for f in facts]),
        "host_storage_capacity": _describe([_bytes(f.get("storage_bytes")) for f in facts]),
        "host_storage_type": _describe([f.get("storage_type") for f in facts]),
        "accelerators_per_node": _describe([str(len(a)) for a in accelerators]),
        "accelerator_model_name": _na_if_none(_describe(accel_models)),
        "accelerator_memory_capacity": _na_if_none(_describe(accel_memory)),
        "framework": framework,
        "operating_system": _describe([_join(f.get("os"), f"kernel {f['kernel']}" if f.get("kernel") else None, ", ") for f in facts]),
        "system_type": DEFAULT_SYSTEM_TYPE,
        "other_software_stack": _describe([_join(f"Python {f['python']}" if f.get("python") else None, s, ", ") for f, s in zip(facts, software)]),
        "host_processor_frequency": _describe([f"{f['cpu_frequency_mhz']:g} MHz" if f.get("cpu_frequency_mhz") else None for f in facts]),
        "host_processor_caches": _describe([f.get("caches") for f in facts]),
        "host_memory_configuration": NA,
        "host_processor_interconnect": NA,
        "host_networking": _describe([_networking(f.get("network")) for f in facts]),
        "host_networking_topology": NA,
        "accelerator_frequency": NA,
        "accelerator_host_interconnect": NA,
        "accelerator_interconnect": NA,
        "accelerator_interconnect_topology": NA,
        "accelerator_memory_configuration": NA,
        "accelerator_on-chip_memories": NA,
        "cooling": NA,
        "hw_notes": _hw_notes(names, facts, frameworks if mixed else None),
        "sw_notes": _sw_notes(names, backends, frameworks) if mixed
        else f"Benchmarked with orch, backend {backends[0] if backends else backend}; system facts collected on each node at run time.",
        "host_network_card_count": _describe([str(sum(1 for n in f.get("network") or [] if not n.get("virtual"))) if f.get("network") is not None else None for f in facts]),
        "system_type_detail": NA,
    }
    for key, value in (meta or {}).items():
        if key != "measurements":
            system[key] = str(value)
    return system


def _describe(values: list[Any]) -> str:
    """One value when all nodes agree, else "A (2 nodes) + B (1 node)" (most common first)."""
    texts = [NA if v is None or str(v).strip() == "" else str(v) for v in values]
    if not texts:
        return NA
    counts = Counter(texts)
    if len(counts) == 1:
        return texts[0]
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return " + ".join(f"{text} ({n} node{'s' if n > 1 else ''})" for text, n in ordered)


def _na_if_none(text: str) -> str:
    """No accelerator on any node: the checker's "N/A" rather than "none"."""
    return NA if text == "none" else text


def _join(first: Any, second: Any, sep: str = " ") -> str | None:
    parts = [str(p) for p in (first, second) if p]
    return sep.join(parts) or None


def _join_all(parts: Any) -> str | None:
    return ", ".join(parts) or None


def _bytes(value: Any) -> str | None:
    """Bytes as GiB ("24 GiB", "0.5 GiB"); None stays None."""
    if not isinstance(value, (int, float)) or value <= 0:
        return None
    gib = value / 2**30
    return f"{gib:.0f} GiB" if gib >= 10 else f"{gib:.1f} GiB"


def _networking(interfaces: Any) -> str | None:
    if interfaces is None:
        return None
    cards = [n for n in interfaces if not n.get("virtual")]
    if not cards:
        return NA
    return ", ".join(f"{n['iface']} {n['speed_mbps']} Mb/s" if n.get("speed_mbps") else f"{n['iface']} (speed unknown)" for n in cards)


def _sw_notes(names: list[str], backends: list[str], frameworks: list[str]) -> str:
    """Which node ran which backend, for a cluster whose nodes ran different ones."""
    ran = "; ".join(f"{name}: {fw} (orch backend {b})" for name, b, fw in zip(names, backends, frameworks))
    return f"Benchmarked with orch, one backend per node ({ran}); system facts collected on each node at run time."


def _hw_notes(names: list[str], facts: list[dict[str, Any]], frameworks: list[str] | None = None) -> str:
    """Per-node hardware, so a mixed cluster is described node by node (with each node's framework when they differ)."""
    parts = []
    for i, (name, f) in enumerate(zip(names, facts)):
        cpu = f.get("cpu_model") or "unknown CPU"
        threads = f.get("threads")
        accel = [a.get("model") for a in f.get("accelerators") or []]
        text = f"{name} ({f.get('hostname') or 'unknown host'}): {f.get('sockets') or '?'}x {cpu}"
        text += f", {threads} threads" if threads else ""
        text += f", {_bytes(f.get('memory_bytes')) or 'unknown'} memory"
        text += f", {len(accel)}x {', '.join(sorted(set(accel)))}" if accel else ", no accelerator"
        text += f", runs {frameworks[i]}" if frameworks else ""
        parts.append(text)
    return "; ".join(parts) or NA


def measurements(run_meta: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """measurements.json for the result: what the model takes and where its weights came from.

    Args:
        run_meta: the performance run's run.json.
        overrides: the ``measurements`` mapping of ``--system-meta``.
    """
    model = str(run_meta.get("model") or "")
    weights = Path(str(run_meta.get("model_path") or "unknown")).name
    known = {
        "bert-large": ("fp32", "none: the MLPerf reference BERT-Large ONNX model as published"),
        "bert-large-int8": ("int8", "quantized to int8 (the MLPerf reference int8 BERT-Large ONNX model as published)"),
        "demo": ("fp32", "not BERT-Large: orch's demo model, all-MiniLM-L6-v2 weights with a linear QA head orch fitted on SQuAD dev articles, built by orch"),
    }
    weight_types, transformations = known.get(model, (NA, "custom ONNX model given by path; see the README"))
    variant = run_meta.get("model_variant") or {}
    if variant.get("precision", "fp32") != "fp32":
        # orch made a reduced-precision variant: the starting weights are the fp32 file it came from.
        weights = Path(str(variant.get("source_model_path") or weights)).name
        weight_types = variant.get("weight_data_types") or weight_types
        transformations = f"{variant.get('weight_transformations')}; from: {transformations}"
    result = {
        "input_data_types": "int64",
        "retraining": "no",
        "starting_weights_filename": weights,
        "weight_data_types": weight_types,
        "weight_transformations": transformations,
    }
    for key, value in (overrides or {}).items():
        result[key] = str(value)
    return result
