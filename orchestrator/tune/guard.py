"""The accuracy guard: a reduced-precision model is bert-99 only next to its own measured fp32 F1.

MLPerf's BERT-99 accepts any precision whose F1 is at least 99% of the fp32
model's (BERT-99.9: 99.9%). orch keeps, for every model file it ran in
accuracy mode, the EM/F1 it measured, keyed by the file's sha256, the
features' cache key (data set + vocab + feature parameters) and the number
of samples scored: ``<cache>/accuracy/<model>-<features>-<count>.json``. A
reduced-precision run is then judged against the record of its fp32 source
model on the same samples; with no such record its accuracy is *unknown*, and
a submission from it is refused, as is one below target.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from orchestrator.errors import SubmissionError

# Strictest first: a run meets the first whose ratio it reaches.
TARGETS: tuple[tuple[str, float], ...] = (("bert-99.9", 0.999), ("bert-99", 0.99))
SUBMISSION_TARGET = "bert-99"


class GuardError(SubmissionError):
    """A reduced-precision run cannot be submitted: its accuracy is unknown or below target."""


@dataclasses.dataclass(frozen=True)
class AccuracyKey:
    """Which model file, on which features, over how many samples."""

    model_sha256: str
    features_key: str
    count: int

    def filename(self) -> str:
        return f"{self.model_sha256[:16]}-{self.features_key[:16]}-{self.count}.json"


def _folder(cache_dir: Path | None) -> Path:
    from orchestrator.paths import cache_subdir

    folder = Path(cache_dir) if cache_dir is not None else cache_subdir("accuracy")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def store_accuracy(key: AccuracyKey, *, f1: float, exact_match: float, precision: str, examples_scored: int,
                   run_dir: str | None = None, cache_dir: Path | None = None) -> Path:  # fmt: skip
    """Remember what an accuracy run measured (the latest measurement wins)."""
    from orchestrator.fileio import atomic_write

    record = {
        **dataclasses.asdict(key),
        "precision": precision,
        "f1": f1,
        "exact_match": exact_match,
        "examples_scored": examples_scored,
        "run_dir": run_dir,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return atomic_write(_folder(cache_dir) / key.filename(), json.dumps(record, indent=2) + "\n")


def load_accuracy(key: AccuracyKey, *, cache_dir: Path | None = None) -> dict[str, Any] | None:
    """The stored record for ``key``, or None (a damaged file counts as none)."""
    path = _folder(cache_dir) / key.filename()
    try:
        record = json.loads(path.read_text())
        float(record["f1"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if record.get("model_sha256") == key.model_sha256 else None


def target_met(f1: float, reference_f1: float) -> str | None:
    """The strictest target ``f1`` reaches against ``reference_f1``, or None."""
    if reference_f1 <= 0:
        return TARGETS[0][0] if f1 >= reference_f1 else None
    for name, share in TARGETS:
        if f1 >= share * reference_f1:
            return name
    return None


def judge(precision: str, f1: float | None, reference: dict[str, Any] | None) -> dict[str, Any]:
    """The guard's verdict on one accuracy figure (what run.json's ``accuracy_target`` holds).

    Args:
        precision: the canonical precision that ran.
        f1: the F1 it measured (None: not an accuracy run).
        reference: the fp32 record of its source model on the same samples (None: unknown).

    Returns:
        ``{"precision", "f1", "reference_f1", "ratio", "meets", "reason"}``; ``meets``
        is ``bert-99.9``, ``bert-99`` or None.
    """
    verdict: dict[str, Any] = {"precision": precision, "f1": f1, "reference_f1": None, "ratio": None, "meets": None}
    if precision == "fp32":
        verdict.update(reference_f1=f1, ratio=1.0 if f1 is not None else None, meets=TARGETS[0][0] if f1 is not None else None)
        verdict["reason"] = "fp32: the model's own reference accuracy"
        return verdict
    if f1 is None:
        verdict["reason"] = "not an accuracy run: no F1 to judge"
        return verdict
    if reference is None:
        verdict["reason"] = (
            "unknown: no fp32 accuracy of this model was measured on the same samples "
            "(run orch bench --mode accuracy --precision fp32 with the same --model/--dataset/--count first)"
        )
        return verdict
    ref = float(reference["f1"])
    verdict.update(reference_f1=ref, ratio=f1 / ref if ref else None, meets=target_met(f1, ref))
    if verdict["meets"]:
        verdict["reason"] = f"F1 {f1:.3f} is {100 * f1 / ref:.2f}% of the fp32 F1 {ref:.3f}: meets {verdict['meets']}"
    else:
        verdict["reason"] = f"F1 {f1:.3f} is {100 * f1 / ref:.2f}% of the fp32 F1 {ref:.3f}: below bert-99 (99%)"
    return verdict


def accuracy_target(*, precision: str, model_sha256: str, source_sha256: str, features_key: str, count: int,
                    f1: float | None, exact_match: float | None, examples_scored: int, run_dir: str | None = None,
                    cache_dir: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Record an accuracy run's figure, then judge it against its fp32 reference.

    The figure is stored under the file that ran (so tune and later runs can
    look it up); an fp32 run thereby becomes the reference of its variants.
    """
    if f1 is not None and examples_scored:
        store_accuracy(
            AccuracyKey(model_sha256, features_key, count), f1=f1, exact_match=exact_match or 0.0,
            precision=precision, examples_scored=examples_scored, run_dir=run_dir, cache_dir=cache_dir,
        )  # fmt: skip
    reference = load_accuracy(AccuracyKey(source_sha256, features_key, count), cache_dir=cache_dir)
    return judge(precision, f1, reference)


def submission_faults(meta: dict[str, Any]) -> list[str]:
    """Why an accuracy run.json cannot back a submission under the guard (empty: it can).

    fp32 runs pass (they are their own reference). A reduced-precision run needs
    a verdict that meets ``SUBMISSION_TARGET`` or better.
    """
    precision = meta.get("precision") or "fp32"
    if precision == "fp32":
        return []
    verdict = meta.get("accuracy_target") or {}
    if verdict.get("meets") in (name for name, _ in TARGETS):
        return []
    reason = verdict.get("reason") or "its accuracy against the fp32 model is unknown"
    return [f"precision {precision}: {reason}; a submission needs F1 >= 99% of the fp32 model's (bert-99)"]


def check_submittable(meta: dict[str, Any]) -> None:
    """Raise ``GuardError`` with the reason when ``submission_faults`` finds any."""
    faults = submission_faults(meta)
    if faults:
        raise GuardError(faults[0], hint="measure the fp32 accuracy on the same samples, or submit fp32")
