"""Turn a ``--model`` value into a model file plus its vocabulary and data set.

``--model`` is one of ``demo`` (built locally, see ``orchestrator.models.demo``),
``bert-large`` / ``bert-large-int8`` (the MLPerf ONNX files that
``orch fetch`` puts in the cache) or a path to an ``.onnx`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.errors import DatasetError, ModelError

MODEL_NAMES = ("demo", "bert-large", "bert-large-int8")


@dataclass(frozen=True)
class ModelChoice:
    """A resolved model: what to run and on which data.

    Attributes:
        name: ``demo``, ``bert-large``, ``bert-large-int8``, or the file's stem for a path.
        path: the ONNX file (absolute).
        vocab_path: the BERT ``vocab.txt`` to tokenize with (absolute).
        dataset_path: the SQuAD v1.1 JSON to build features from (absolute).
        is_demo: True for the demo model (named ``demo`` or given by its path): its
            figures measure the pipeline, not BERT-Large (the run says so).
    """

    name: str
    path: Path
    vocab_path: Path
    dataset_path: Path
    is_demo: bool


def _fetched(artifact: str, what: str) -> Path:
    """The cached file of an ``orch fetch`` artifact; ModelError/DatasetError when absent."""
    from orchestrator.fetch import artifact_path

    path = Path(artifact_path(artifact)).resolve()
    if not path.is_file():
        error = DatasetError if artifact in ("vocab", "squad-dev") else ModelError
        raise error(f"{what} {path} is not in the cache", hint=f"run: orch fetch {artifact}")
    return path


def _given(path: Path, flag: str, error: type[ModelError] | type[DatasetError]) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise error(f"{flag} {path} does not exist", hint=f"check the path given to {flag}")
    return path


def resolve_model(spec: str, *, vocab: Path | None = None, dataset: Path | None = None) -> ModelChoice:
    """Resolve ``--model`` (and optional ``--vocab`` / ``--dataset``) to files.

    Args:
        spec: ``demo``, ``bert-large``, ``bert-large-int8`` or a path to an ``.onnx`` file.
        vocab: a ``vocab.txt`` overriding the default one.
        dataset: a SQuAD v1.1 JSON overriding the default one.

    Returns:
        The choice, with absolute paths that exist (the demo model is built if needed).
        Defaults: ``demo`` uses the demo vocabulary and demo data set; the others
        use the fetched ``vocab`` and ``squad-dev``.

    Raises:
        ModelError: the model file is missing (``run: orch fetch ...`` for the named
            models), not an ``.onnx`` file, or the demo weights package is missing.
        DatasetError: the vocabulary or data set is missing.
    """
    from orchestrator.models import demo

    if spec == "demo":
        return _with_demo_defaults("demo", demo.demo_model_path, vocab, dataset)

    if spec in ("bert-large", "bert-large-int8"):
        name = spec
        path = _fetched(spec, f"model {spec!r}:")
    else:
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise ModelError(
                f"--model {spec}: no such file, and not one of {', '.join(MODEL_NAMES)}",
                hint=f"give one of {', '.join(MODEL_NAMES)} or the path to an .onnx file",
            )
        if path.suffix.lower() != ".onnx":
            raise ModelError(f"--model {path} is not an .onnx file", hint="give the path to an ONNX model")
        from orchestrator.models.interface import check_model_file

        graph = check_model_file(path)  # before the vocab and data set: the model is what was named
        name = path.stem
        if graph == demo.GRAPH_NAME:
            # orch's own demo model given by its path (run.json's model_path, a copy of it): it was
            # built for the demo vocabulary and data set, which it gets unless others are given.
            return _with_demo_defaults(name, lambda: path, vocab, dataset)
    vocab_path = _given(vocab, "--vocab", DatasetError) if vocab else _fetched("vocab", "vocabulary (--vocab)")
    dataset_path = _given(dataset, "--dataset", DatasetError) if dataset else _fetched("squad-dev", "SQuAD dev set (--dataset)")
    return ModelChoice(name, path, vocab_path, dataset_path, False)


def _with_demo_defaults(name: str, model_path: Callable[[], Path], vocab: Path | None, dataset: Path | None) -> ModelChoice:
    """The demo model, with the demo vocabulary and data set unless others are given.

    ``model_path`` is called last: building the demo model takes seconds, so the
    vocab and data set are checked first.
    """
    from orchestrator.models import demo

    vocab_path = _given(vocab, "--vocab", DatasetError) if vocab else demo.demo_vocab_path()
    if dataset:
        dataset_path = _given(dataset, "--dataset", DatasetError)
    else:
        dataset_path = demo.demo_dataset_path()
        if not dataset_path.is_file():
            raise DatasetError(
                f"the demo data set {dataset_path} is missing from this orch installation",
                hint="reinstall orch, or pass --dataset with a SQuAD v1.1 JSON",
            )
    return ModelChoice(name, model_path(), vocab_path, dataset_path, True)
