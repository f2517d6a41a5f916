"""What a node needs on disk to bench: the model, vocab, data set and prepared features.

Files inside orch's local cache keep their place under the node's
``<data_dir>/cache`` (the container's ``ORCH_CACHE_DIR``), so the node finds
the features and the demo model exactly as this machine does. Other files
(a model or data set given by path) go to ``<data_dir>/files``. A sha256
manifest on the node says what is there; a file is sent only when missing or
different.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.deploy.plan import CONTAINER_DATA, DEPLOY_JSON, MANIFEST, STATE_DIR, data_path
from orchestrator.errors import InputError, RemoteError
from orchestrator.inventory import Inventory, Node
from orchestrator.paths import cache_dir, cache_subdir
from orchestrator.ssh.transport import Result, Transport, check, remote_cmd

_SHA_LOCK = threading.Lock()


@dataclass(frozen=True)
class PayloadFile:
    """One file to ship: where it is here, where it goes under data_dir, its checksum."""

    local: Path
    relative: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Payload:
    """Everything shipped to each node, and what the bench inside the container is told."""

    files: tuple[PayloadFile, ...]
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
    """sha256 of a file, remembered per (path, size, mtime) so warm deploys do not re-read gigabytes."""
    stat = path.stat()
    memo = cache_subdir("deploy") / "sha256.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    with _SHA_LOCK:
        try:
            known = json.loads(memo.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        if key in known:
            return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _SHA_LOCK:
        try:
            known = json.loads(memo.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        known[key] = value
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known), encoding="utf-8")
        tmp.replace(memo)
    return value


def _relative_for(path: Path) -> str:
    """cache/<path in orch's cache> for cached files, else files/<sha8>-<name>."""
    resolved = path.resolve()
    try:
        return "cache/" + resolved.relative_to(cache_dir()).as_posix()
    except ValueError:
        return f"files/{sha256_of(resolved)[:12]}-{resolved.name}"


def payload_file(path: Path) -> PayloadFile:
    """A ``PayloadFile`` for one local file.

    Raises:
        InputError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist (needed on the nodes)")
    return PayloadFile(path.resolve(), _relative_for(path), sha256_of(path), path.stat().st_size)


def build_payload(
    model: str = "demo",
    *,
    vocab: Path | None = None,
    dataset: Path | None = None,
    features: Callable[[Path, Path], list[Path]] | None = None,
) -> Payload:
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
    model_file = payload_file(choice.path)
    vocab_file = payload_file(choice.vocab_path)
    dataset_file = payload_file(choice.dataset_path)
    files = [model_file, vocab_file, dataset_file] + [payload_file(p) for p in feature_files]
    unique = {f.relative: f for f in files}
    return Payload(
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


def remote_sizes_command(node: Node, payload: Payload) -> str:
    """Prints ``<size> <path>`` for each payload file present on the node (missing ones are skipped)."""
    paths = [data_path(node, f.relative) for f in payload.files]
    return remote_cmd("find", *paths, "-maxdepth", "0", "-type", "f", "-printf", "%s %p\\n") + " 2>/dev/null; true"


def mkdirs_command(node: Node, files: list[PayloadFile]) -> str:
    parents = sorted({os.path.dirname(data_path(node, f.relative)) for f in files} | {data_path(node, STATE_DIR)})
    return remote_cmd("mkdir", "-p", *parents)


def files_to_send(node: Node, payload: Payload, manifest_text: str, sizes_text: str) -> list[PayloadFile]:
    """The payload files missing on the node or different from the manifest's record."""
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
    for f in payload.files:
        record = manifest.get(f.relative) or {}
        present = sizes.get(data_path(node, f.relative))
        if record.get("sha256") != f.sha256 or present != f.size:
            missing.append(f)
    return missing


def deploy_json(inventory: Inventory, node: Node, payload: Payload, ray_ips: dict[str, str]) -> dict[str, Any]:
    """What the bench inside a container reads from ``/data/deploy.json`` (a ``DeployRecord``)."""
    from orchestrator.records import DeployedNode, DeployRecord

    return DeployRecord(
        cluster=inventory.cluster,
        node=node.name,
        head=inventory.head,
        model=payload.model,
        model_path=payload.container_path(payload.model_file),
        vocab_path=payload.container_path(payload.vocab_file),
        dataset_path=payload.container_path(payload.dataset_file),
        cache_dir=payload.container_path("cache"),
        ray_address=f"{ray_ips.get(inventory.head, '')}:{inventory.ray.port}",
        # ray_ip None: a node left out (--skip-unreachable), the bench must not count on it.
        nodes=[
            DeployedNode(name=n.name, ray_ip=ray_ips.get(n.name), profile=n.profile, gpus=n.gpus, cpus=n.cpus,
                         labels=dict(n.labels))
            for n in inventory.nodes
        ],
    ).to_dict()


def ship_payload(
    transport: Transport,
    inventory: Inventory,
    node: Node,
    payload: Payload,
    ray_ips: dict[str, str],
    *,
    on_bytes: Callable[[int], None] | None = None,
    workdir: Path,
    known: tuple[bool, str, str] | None = None,
) -> list[PayloadFile]:
    """Send the payload files the node lacks, then its manifest and deploy.json.

    Args:
        known: (manifest found, manifest text, sizes text) already read from
            the node by preflight; read here when None.

    Returns:
        The files that were sent (empty when the node was up to date).

    Raises:
        RemoteError: a command or a copy failed.
    """
    host = node.name
    if known is None:
        manifest = transport.run(host, remote_manifest_command(node), timeout=60)
        sizes = transport.run(host, remote_sizes_command(node, payload), timeout=60)
    else:
        manifest = Result(0 if known[0] else 1, known[1], "")
        sizes = Result(0, known[2], "")
    current = transport.run(host, remote_cmd("cat", data_path(node, DEPLOY_JSON)), timeout=60)
    send = files_to_send(node, payload, manifest.stdout if manifest.ok else "", sizes.stdout)
    if send or not manifest.ok:
        command = mkdirs_command(node, send)
        check(transport.run(host, command, timeout=60), host=host, command=command, what="creating folders in data_dir")
        for f in send:
            transport.put(host, f.local, data_path(node, f.relative), on_bytes=on_bytes)
    _put_json(transport, host, node, workdir, "manifest", MANIFEST,
              {"files": {f.relative: {"sha256": f.sha256, "size": f.size} for f in payload.files}},
              skip_if=manifest.stdout if (manifest.ok and not send) else None)
    _put_json(transport, host, node, workdir, "deploy", DEPLOY_JSON, deploy_json(inventory, node, payload, ray_ips),
              skip_if=current.stdout if current.ok else None)
    return send


def _put_json(
    transport: Transport,
    host: str,
    node: Node,
    workdir: Path,
    stem: str,
    relative: str,
    data: dict[str, Any],
    *,
    skip_if: str | None = None,
) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if skip_if is not None and skip_if == text:
        return
    local = workdir / f"{host}-{stem}.json"
    local.write_text(text, encoding="utf-8")
    transport.put(host, local, data_path(node, relative))


def read_remote_json(transport: Transport, host: str, path: str) -> dict[str, Any] | None:
    """A JSON file on a node, or None when it is absent or unreadable."""
    result: Result = transport.run(host, remote_cmd("cat", path), timeout=60)
    if not result.ok:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise RemoteError(f"node {host}: {path} is not valid JSON ({exc})", host=host) from exc


__all__ = [
    "Payload",
    "PayloadFile",
    "build_payload",
    "deploy_json",
    "feature_cache_files",
    "files_to_send",
    "payload_file",
    "ship_payload",
]
