"""The bundle: what a node needs on disk to bench (model, vocab, data set, prepared features).

Files inside orch's local cache keep their place under the node's
``<data_dir>/cache`` (the container's ``ORCH_CACHE_DIR``), so the node finds
the features and the demo model exactly as this machine does. Other files
(a model or data set given by path) go to ``<data_dir>/files``. A sha256
manifest on the node says what is there; a file is sent only when missing or
different. (``orchestrator.bench.payload`` is something else: the answers
workers send back.)
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.deploy.commands import CONTAINER_DATA, MANIFEST, STATE_DIR, data_path
from orchestrator.errors import InputError
from orchestrator.fileio import atomic_write, sha256_file
from orchestrator.inventory import Inventory, Node
from orchestrator.paths import cache_dir, cache_subdir
from orchestrator.ssh.transport import remote_cmd

_SHA_LOCK = threading.Lock()


@dataclass(frozen=True)
class BundleFile:
    """One file to ship: where it is here, where it goes under data_dir, its checksum."""

    local: Path
    relative: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Bundle:
    """Everything shipped to each node, and what the bench inside the container is told."""

    files: tuple[BundleFile, ...]
    model: str
    model_file: str  # relative paths under data_dir
    vocab_file: str
    dataset_file: str

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def container_path(self, relative: str) -> str:
        return f"{CONTAINER_DATA}/{relative}"


def sha256_of(path: Path) -> str:
    """``fileio.sha256_file``, remembered per (path, size, mtime) so warm deploys do not re-read gigabytes."""
    stat = path.stat()
    memo = cache_subdir("deploy") / "sha256.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    with _SHA_LOCK:
        known = _read_memo(memo)
        if key in known:
            return known[key]
    value = sha256_file(path)
    with _SHA_LOCK:
        known = _read_memo(memo)
        known[key] = value
        atomic_write(memo, json.dumps(known))
    return value


def _read_memo(memo: Path) -> dict[str, str]:
    try:
        return json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _relative_for(path: Path) -> str:
    """cache/<path in orch's cache> for cached files, else files/<sha8>-<name>."""
    resolved = path.resolve()
    try:
        return "cache/" + resolved.relative_to(cache_dir()).as_posix()
    except ValueError:
        return f"files/{sha256_of(resolved)[:12]}-{resolved.name}"


def bundle_file(path: Path) -> BundleFile:
    """A ``BundleFile`` for one local file.

    Raises:
        InputError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist (needed on the nodes)")
    return BundleFile(path.resolve(), _relative_for(path), sha256_of(path), path.stat().st_size)


def build_bundle(
    model: str = "demo",
    *,
    vocab: Path | None = None,
    dataset: Path | None = None,
    features: Callable[[Path, Path], list[Path]] | None = None,
) -> Bundle:
    """Resolve the model spec and prepare the features here, then list the files to ship.

    Args:
        model: ``demo``, ``bert-large``, ``bert-large-int8`` or a path to an ``.onnx`` file.
        vocab, dataset: override the model's vocabulary and data set.
        features: (dataset, vocab) -> the feature cache files (default:
            ``feature_cache_files``, which builds them when missing).

    Raises:
        InputError: the model, vocab or data set is missing (with the fix).
    """
    from orchestrator.models.resolve import resolve_model

    choice = resolve_model(model, vocab=vocab, dataset=dataset)
    feature_files = (features or feature_cache_files)(choice.dataset_path, choice.vocab_path)
    model_file = bundle_file(choice.path)
    vocab_file = bundle_file(choice.vocab_path)
    dataset_file = bundle_file(choice.dataset_path)
    files = [model_file, vocab_file, dataset_file] + [bundle_file(p) for p in feature_files]
    unique = {f.relative: f for f in files}
    return Bundle(
        files=tuple(unique.values()),
        model=choice.name,
        model_file=model_file.relative,
        vocab_file=vocab_file.relative,
        dataset_file=dataset_file.relative,
    )


def feature_cache_files(dataset: Path, vocab: Path) -> list[Path]:
    """The cached feature files of (dataset, vocab), built here first when missing."""
    from orchestrator.squad.library import load_features

    folder = cache_subdir("features")
    features = load_features(dataset, vocab, cache_dir=folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(features.cache_key + "."))
    if not files:
        raise InputError(f"no cached features named {features.cache_key[:12]}... in {folder} after preparing them")
    return files


# -- on a node -------------------------------------------------------------------


def remote_manifest_command(node: Node) -> str:
    """Prints the node's manifest (exit 1 when there is none yet)."""
    return remote_cmd("cat", data_path(node, MANIFEST))


def remote_sizes_command(node: Node, bundle: Bundle) -> str:
    """Prints ``<size> <path>`` for each bundle file present on the node (missing ones are skipped)."""
    paths = [data_path(node, f.relative) for f in bundle.files]
    return remote_cmd("find", *paths, "-maxdepth", "0", "-type", "f", "-printf", "%s %p\\n") + " 2>/dev/null; true"


def mkdirs_command(node: Node, files: tuple[BundleFile, ...] | list[BundleFile]) -> str:
    """Creates data_dir, orch's bookkeeping folder and the folders of ``files``."""
    parents = sorted({os.path.dirname(data_path(node, f.relative)) for f in files} | {data_path(node, STATE_DIR)})
    return remote_cmd("mkdir", "-p", *parents)


def files_to_send(node: Node, bundle: Bundle, manifest_text: str, sizes_text: str) -> list[BundleFile]:
    """The bundle's files missing on the node or different from the manifest's record."""
    try:
        manifest = json.loads(manifest_text).get("files", {}) if manifest_text.strip() else {}
    except (ValueError, AttributeError):
        manifest = {}
    sizes: dict[str, int] = {}
    for line in sizes_text.splitlines():
        size, _, path = line.partition(" ")
        if size.isdigit():
            sizes[path] = int(size)
    missing = []
    for f in bundle.files:
        record = manifest.get(f.relative) or {}
        present = sizes.get(data_path(node, f.relative))
        if record.get("sha256") != f.sha256 or present != f.size:
            missing.append(f)
    return missing


def deploy_json(inventory: Inventory, node: Node, bundle: Bundle, ray_ips: dict[str, str]) -> dict[str, Any]:
    """What the bench inside a container reads from ``/data/deploy.json`` (a ``DeployRecord``)."""
    from orchestrator.records import DeployedNode, DeployRecord

    return DeployRecord(
        cluster=inventory.cluster,
        node=node.name,
        head=inventory.head,
        model=bundle.model,
        model_path=bundle.container_path(bundle.model_file),
        vocab_path=bundle.container_path(bundle.vocab_file),
        dataset_path=bundle.container_path(bundle.dataset_file),
        cache_dir=bundle.container_path("cache"),
        ray_address=f"{ray_ips.get(inventory.head, '')}:{inventory.ray.port}",
        # ray_ip None: a node left out (--skip-unreachable), the bench must not count on it.
        nodes=[
            DeployedNode(name=n.name, ray_ip=ray_ips.get(n.name), profile=n.profile, gpus=n.gpus, cpus=n.cpus,
                         labels=dict(n.labels))
            for n in inventory.nodes
        ],
    ).to_dict()


def manifest_text(bundle: Bundle) -> str:
    """The manifest written to ``<data_dir>/.orch/manifest.json``: every file's sha256 and size."""
    return json_text({"files": {f.relative: {"sha256": f.sha256, "size": f.size} for f in bundle.files}})


def json_text(data: dict[str, Any]) -> str:
    """JSON as orch writes it on nodes (compared as text to skip unchanged files)."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


__all__ = [
    "Bundle",
    "BundleFile",
    "build_bundle",
    "bundle_file",
    "deploy_json",
    "feature_cache_files",
    "files_to_send",
    "manifest_text",
]
