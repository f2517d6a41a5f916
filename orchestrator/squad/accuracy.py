"""SQuAD v1.1 accuracy of BERT logits, as MLPerf's ``accuracy-squad.py`` computes it.

Ports (Apache-2.0) of mlcommons/inference ``language/bert/accuracy-squad.py``
(loadgen log reading, ``write_predictions`` with n-best 20, max answer length 30,
``get_final_text`` with the BERT BasicTokenizer, lower case) and of the official
``evaluate-v1.1.py`` (``normalize_answer``, EM, F1, max over ground truths).

One shortcut keeps it fast and changes nothing: the reference builds an n-best list
but the prediction is always its first entry, i.e. the best-scoring valid span, so
only that span's text is projected back to the context.

When only some features were answered (a test-mode run covers a subset of the
QSL), only the questions whose features were all answered are scored, and the
counts say so; the reference would instead score every unanswered question as 0.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.errors import InputError

N_BEST_SIZE = 20
MAX_ANSWER_LENGTH = 30
# The reference pads logits shorter than the sequence with this value.
_PAD_LOGIT = -10000.0


@dataclass(frozen=True)
class AccuracyResult:
    """EM and F1 in percent over ``examples_scored`` questions, with coverage counts."""

    exact_match: float
    f1: float
    examples_scored: int
    examples_total: int
    features_answered: int
    features_total: int

    @property
    def complete(self) -> bool:
        """Whether every question was scored (what a submission's accuracy run needs)."""
        return self.examples_scored == self.examples_total and self.features_answered == self.features_total


# --- official evaluate-v1.1.py ---------------------------------------------------


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-overlap F1 of two answers after normalisation (0..1)."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """Whether two answers are equal after normalisation."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction: str, ground_truths) -> float:
    """The best score of ``prediction`` against any ground truth."""
    return max(metric_fn(prediction, gt) for gt in ground_truths)


# --- accuracy-squad.py post-processing --------------------------------------------


def _strip_spaces(text: str) -> tuple[str, dict[int, int]]:
    ns_chars = []
    ns_to_s_map = {}
    for i, c in enumerate(text):
        if c == " ":
            continue
        ns_to_s_map[len(ns_chars)] = i
        ns_chars.append(c)
    return "".join(ns_chars), ns_to_s_map


def get_final_text(pred_text: str, orig_text: str) -> str:
    """Project the normalised predicted text back onto the original context words.

    E.g. ``pred_text`` "steve smith" and ``orig_text`` "Steve Smith's" give "Steve
    Smith". When the character alignment fails, ``orig_text`` is returned, as in
    the reference.
    """
    from orchestrator.squad.tokenizer import basic_tokenizer

    tok_text = " ".join(basic_tokenizer().tokenize(orig_text))
    start_position = tok_text.find(pred_text)
    if start_position == -1:
        return orig_text
    end_position = start_position + len(pred_text) - 1

    orig_ns_text, orig_ns_to_s_map = _strip_spaces(orig_text)
    tok_ns_text, tok_ns_to_s_map = _strip_spaces(tok_text)
    if len(orig_ns_text) != len(tok_ns_text):
        return orig_text
    tok_s_to_ns_map = {tok_index: i for i, tok_index in tok_ns_to_s_map.items()}

    orig_start_position = None
    if start_position in tok_s_to_ns_map:
        orig_start_position = orig_ns_to_s_map.get(tok_s_to_ns_map[start_position])
    if orig_start_position is None:
        return orig_text
    orig_end_position = None
    if end_position in tok_s_to_ns_map:
        orig_end_position = orig_ns_to_s_map.get(tok_s_to_ns_map[end_position])
    if orig_end_position is None:
        return orig_text
    return orig_text[orig_start_position : orig_end_position + 1]


def _best_indexes(logits: np.ndarray, n_best_size: int) -> list[int]:
    # A stable sort on the negated values keeps the reference's tie order (lower index first).
    return np.argsort(-logits, kind="stable")[:n_best_size].tolist()


def predict_text(example, infos, logits_by_feature: list[np.ndarray]) -> str:
    """The reference's answer for one question: the best valid span over its features.

    Args:
        example: the ``SquadExample``.
        infos: its answered features' ``FeatureInfo`` (in feature order).
        logits_by_feature: matching float arrays (seq_len, 2): start, end.

    Returns:
        The answer text ("empty" when no span is valid, as in the reference).
    """
    best = None  # (score, info, start, end); first of equal scores wins, as the stable sort
    for info, logits in zip(infos, logits_by_feature):
        start_logits = logits[:, 0].astype(np.float64)
        end_logits = logits[:, 1].astype(np.float64)
        first = info.doc_offset
        stop = info.doc_offset + len(info.tok_to_orig)  # context positions are [first, stop)
        for start_index in _best_indexes(start_logits, N_BEST_SIZE):
            if not first <= start_index < stop or not info.is_max_context[start_index - first]:
                continue
            for end_index in _best_indexes(end_logits, N_BEST_SIZE):
                if not first <= end_index < stop or end_index < start_index:
                    continue
                if end_index - start_index + 1 > MAX_ANSWER_LENGTH:
                    continue
                score = start_logits[start_index] + end_logits[end_index]
                if best is None or score > best[0]:
                    best = (score, info, start_index, end_index)
    if best is None:
        return "empty"
    _, info, start_index, end_index = best
    tok_text = " ".join(info.tokens[start_index : end_index + 1])
    # De-tokenize WordPieces that have been split off, then clean whitespace.
    tok_text = tok_text.replace(" ##", "").replace("##", "")
    tok_text = " ".join(tok_text.strip().split())
    orig_start = info.tok_to_orig[start_index - info.doc_offset]
    orig_end = info.tok_to_orig[end_index - info.doc_offset]
    orig_text = " ".join(example.doc_tokens[orig_start : orig_end + 1])
    return get_final_text(tok_text, orig_text)


def _as_logits(index: int, value, seq_len: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim == 1 and array.size % 2 == 0:
        array = array.reshape(-1, 2)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] > seq_len:
        raise InputError(f"logits of sample {index} have shape {array.shape}; expected ({seq_len}, 2) start/end pairs")
    if array.shape[0] < seq_len:
        padded = np.full((seq_len, 2), _PAD_LOGIT, dtype=np.float32)
        padded[: array.shape[0]] = array
        array = padded
    return array


def score_logits(features, logits: Mapping[int, np.ndarray]) -> AccuracyResult:
    """EM/F1 of the answers given by ``logits``.

    Args:
        features: the ``SquadFeatures`` the logits answer.
        logits: QSL sample index (= feature index) -> float32 (384, 2) start/end logits.

    Returns:
        The ``AccuracyResult``; EM and F1 are NaN when no question had all its
        features answered.

    Raises:
        InputError: an index is out of range or an array has the wrong shape.
    """
    n_features = len(features)
    seq_len = features.input_ids.shape[1]
    answered: dict[int, np.ndarray] = {}
    for index, value in logits.items():
        if not 0 <= int(index) < n_features:
            raise InputError(
                f"logits for sample {index} but {features.dataset_path} has {n_features} features; "
                "were they made with another data set?"
            )
        answered[int(index)] = _as_logits(int(index), value, seq_len)

    infos = features.infos
    examples = features.examples
    by_example: dict[int, list[int]] = defaultdict(list)
    for feature_index, info in enumerate(infos):
        by_example[info.example_index].append(feature_index)

    exact = f1 = 0.0
    scored = 0
    for example_index, example in enumerate(examples):
        feature_indexes = by_example.get(example_index, [])
        if any(i not in answered for i in feature_indexes):
            continue
        prediction = predict_text(example, [infos[i] for i in feature_indexes], [answered[i] for i in feature_indexes])
        exact += metric_max_over_ground_truths(exact_match_score, prediction, example.answers)
        f1 += metric_max_over_ground_truths(f1_score, prediction, example.answers)
        scored += 1
    return AccuracyResult(
        exact_match=100.0 * exact / scored if scored else float("nan"),
        f1=100.0 * f1 / scored if scored else float("nan"),
        examples_scored=scored,
        examples_total=len(examples),
        features_answered=len(answered),
        features_total=n_features,
    )


def read_accuracy_log(path: Path) -> dict[int, np.ndarray]:
    """Read loadgen's ``mlperf_log_accuracy.json`` into sample index -> (n, 2) float32 logits.

    A sample logged twice keeps its last entry, as the reference does.

    Raises:
        InputError: the file is missing, not JSON, or not a loadgen accuracy log.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"accuracy log {path} does not exist", hint="run the benchmark in accuracy mode first")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"accuracy log {path} is not JSON ({str(exc).splitlines()[0]})", hint="was the run cut short?") from None
    if not isinstance(entries, list):
        raise InputError(f"accuracy log {path} is not a loadgen accuracy log (expected a JSON list)")
    result: dict[int, np.ndarray] = {}
    for n, entry in enumerate(entries):
        try:
            index = entry["qsl_idx"]
            raw = bytes.fromhex(entry["data"])
            if not isinstance(index, int) or len(raw) % 8:
                raise ValueError
        except (TypeError, KeyError, ValueError):
            raise InputError(
                f"accuracy log {path}: entry {n} is not a loadgen sample (needs an int qsl_idx and hex float32 start/end data)"
            ) from None
        result[index] = np.frombuffer(raw, dtype=np.float32).reshape(-1, 2)
    return result


def score_accuracy_log(path: Path, features) -> AccuracyResult:
    """Score a loadgen accuracy log against ``features`` (see ``score_logits``)."""
    return score_logits(features, read_accuracy_log(path))


def accuracy_line(result: AccuracyResult) -> str:
    """The line ``evaluate-v1.1.py`` prints: ``{"exact_match": ..., "f1": ...}``."""
    return json.dumps({"exact_match": result.exact_match, "f1": result.f1})


def write_accuracy_txt(path: Path, result: AccuracyResult, *, log_sha256: str | None = None) -> None:
    """Write accuracy.txt: the official EM/F1 line, then ``hash=<sha256>`` when given."""
    lines = [accuracy_line(result)]
    if log_sha256 is not None:
        lines.append(f"hash={log_sha256}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
