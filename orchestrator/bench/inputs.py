"""What a run reads (model, vocab, data set, features), found and checked before Ray starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.records import BenchConfig, DeployRecord


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Model, vocab and data set actually used, with the QSL's lengths.

    Attributes:
        features_key: sha256 over the data set, the vocab and the feature
            parameters: the identity of the QSL (calibrations are keyed by it).
        model_sha256: the model file's sha256 (calibrations are keyed by it).
    """

    model_name: str
    model_path: Path
    vocab_path: Path
    dataset_path: Path
    model_note: str | None
    lengths: Any  # np.ndarray, real length per sample
    total: int
    features_key: str
    dataset_sha256: str
    model_sha256: str
    variant: Any = None  # orchestrator.models.precision.ModelVariant that runs (set by run_bench)
    layout: dict | None = None  # where the layout came from (orchestrator.tune.apply.tuned_conf)


def resolve_inputs(conf: BenchConfig, deploy: DeployRecord | None = None) -> Inputs:
    """Find the model, vocab and data set, check them, and build (or load cached) features.

    Args:
        conf: the run.
        deploy: on the head of a deployed cluster, what ``orch deploy`` shipped
            to every node (the run uses exactly that).

    Raises:
        InputError: a missing or malformed model, vocab or data set, or a
            ``--model`` other than the one deployed.
    """
    from orchestrator.fileio import cached_sha256
    from orchestrator.models.resolve import ModelChoice, resolve_model
    from orchestrator.squad.library import load_features

    if deploy is not None:
        if conf.model not in (deploy.model, deploy.model_path):
            raise InputError(
                f"--model {conf.model}: the cluster was deployed with model {deploy.model}",
                hint=f"run orch deploy --model {conf.model} first, or bench with --model {deploy.model}",
            )
        choice = ModelChoice(
            name=deploy.model,
            path=Path(deploy.model_path),
            vocab_path=conf.vocab or Path(deploy.vocab_path),
            dataset_path=conf.dataset or Path(deploy.dataset_path),
            is_demo=deploy.model == "demo",
        )
    else:
        choice = resolve_model(conf.model, vocab=conf.vocab, dataset=conf.dataset)
    features = load_features(choice.dataset_path, choice.vocab_path)
    note = None
    if choice.is_demo:
        from orchestrator.models.demo import DEMO_NOTE

        note = DEMO_NOTE
    return Inputs(
        model_name=choice.name,
        model_path=choice.path,
        vocab_path=choice.vocab_path,
        dataset_path=choice.dataset_path,
        model_note=note,
        lengths=features.lengths,
        total=len(features),
        features_key=features.cache_key,
        dataset_sha256=features.dataset_sha256,
        model_sha256=cached_sha256(choice.path),
    )
