"""Fit a linear start/end head over frozen BERT token states, with numpy only.

The demo model's encoder (all-MiniLM-L6-v2) was never trained for question
answering, so its head is fitted here: a linear map from a token's hidden
states (one layer, or several concatenated) to a start and an end logit,
trained with a softmax over the real positions of each feature and
cross-entropy against the answer's first and last token (Adam, mini-batches).
No torch: the encoder runs in ONNX Runtime once to give the states, and the
head is fitted on them in numpy.

Data is split by article (a question and its context never cross the split),
so the held-out F1 says how the head does on text it has never seen.
``scripts/fit_demo_head.py`` drives it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orchestrator.errors import DatasetError


def split_by_article(data: dict, heldout: Sequence[str]) -> tuple[dict, dict]:
    """Split a parsed SQuAD file into (training, held-out) files by article title.

    Raises:
        DatasetError: a held-out title is not in the file, or nothing is left to train on.
    """
    titles = [a.get("title", "") for a in data["data"]]
    missing = [t for t in heldout if t not in titles]
    if missing:
        raise DatasetError(f"held-out article(s) {', '.join(missing)} are not in the data set", hint=f"its titles: {', '.join(titles)}")
    train = [a for a in data["data"] if a.get("title", "") not in heldout]
    held = [a for a in data["data"] if a.get("title", "") in heldout]
    if not train:
        raise DatasetError("every article is held out: nothing left to fit the head on")
    version = data.get("version", "1.1")
    return {"version": version, "data": train}, {"version": version, "data": held}


def write_json(data: dict, path: Path) -> Path:
    """Write a SQuAD dict deterministically (same content, same bytes: same feature cache key)."""
    from orchestrator.fileio import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, json.dumps(data, ensure_ascii=False, sort_keys=True))


def answer_word_spans(data: dict) -> list[list[tuple[int, int]]]:
    """Per question (file order), the (first word, last word) of each of its answers.

    Words are the context's whitespace-split words, as ``read_examples`` makes
    them; an answer whose ``answer_start`` is missing or out of range is skipped.
    """
    from orchestrator.squad.dataset import is_whitespace

    spans: list[list[tuple[int, int]]] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            char_to_word: list[int] = []
            words = -1
            previous_space = True
            for c in context:
                if is_whitespace(c):
                    previous_space = True
                else:
                    if previous_space:
                        words += 1
                    previous_space = False
                char_to_word.append(max(words, 0))
            for qa in paragraph["qas"]:
                found = []
                for answer in qa["answers"]:
                    start = answer.get("answer_start")
                    text = answer["text"]
                    if not isinstance(start, int) or not text or start < 0 or start + len(text) > len(context):
                        continue
                    span = (char_to_word[start], char_to_word[start + len(text) - 1])
                    if span not in found:
                        found.append(span)
                spans.append(found)
    return spans


def token_targets(infos: Sequence, spans: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    """Per feature, the (start, end) positions of its question's answers that lie in its window."""
    targets = []
    for info in infos:
        found = []
        for first_word, last_word in spans[info.example_index]:
            positions = [i for i, w in enumerate(info.tok_to_orig) if first_word <= w <= last_word]
            if not positions:
                continue
            start, end = positions[0], positions[-1]
            # The whole answer must be inside the window (the window may cut it).
            if info.tok_to_orig[start] != first_word or info.tok_to_orig[end] != last_word:
                continue
            found.append((info.doc_offset + start, info.doc_offset + end))
        targets.append(found)
    return targets


def context_tokens(infos: Sequence, offsets: np.ndarray) -> np.ndarray:
    """Flat (tokens,) bool, aligned with ``TokenStates``: the context tokens, the only ones SQuAD's
    post-processing may pick as a start or an end (``accuracy``: positions ``doc_offset`` up)."""
    allowed = np.zeros(int(offsets[-1]), bool)
    for i, info in enumerate(infos):
        first = int(offsets[i]) + info.doc_offset
        allowed[first : min(first + len(info.tok_to_orig), int(offsets[i + 1]))] = True
    return allowed


@dataclasses.dataclass
class TokenStates:
    """The hidden states of every real token of some features, flat.

    Attributes:
        states: (tokens, dim) float16, feature i's tokens at ``offsets[i]:offsets[i + 1]``.
        offsets: (n + 1,) int64.
    """

    states: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1


def extract_states(states_model: Path, features, rows: Sequence[int], *, threads: int | None = None, batch_size: int = 4) -> TokenStates:
    """Run the encoder over ``rows`` of ``features``; keep the states of their real tokens.

    Args:
        states_model: an ONNX file from ``bert_graph.build_bert_states_model``.
        features: ``SquadFeatures``.
        rows: which features.
        threads: ONNX Runtime intra-op threads.
        batch_size: features per run (sorted by length, cut to the longest).
    """
    import onnxruntime as ort

    from orchestrator.models.bert_graph import STATES_OUTPUT

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(states_model), options, providers=["CPUExecutionProvider"])
    rows = np.asarray(rows, dtype=np.int64)
    lengths = features.lengths[rows].astype(np.int64)
    offsets = np.zeros(len(rows) + 1, np.int64)
    offsets[1:] = np.cumsum(lengths)
    dim = session.get_outputs()[0].shape[-1]
    states = np.empty((int(offsets[-1]), dim), np.float16)
    order = np.argsort(lengths, kind="stable")
    for first in range(0, len(rows), batch_size):
        local = order[first : first + batch_size]
        index = rows[local]
        width = int(lengths[local].max())
        (out,) = session.run(
            [STATES_OUTPUT],
            {
                "input_ids": features.input_ids[index, :width].astype(np.int64),
                "input_mask": features.input_mask[index, :width].astype(np.int64),
                "segment_ids": features.segment_ids[index, :width].astype(np.int64),
            },
        )
        for j, i in enumerate(local):
            states[offsets[i] : offsets[i + 1]] = out[j, : lengths[i]]
    return TokenStates(states, offsets)


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Hyperparameters of the fit (every one is recorded with the head)."""

    epochs: int = 12
    learning_rate: float = 1e-3
    l2: float = 1e-4
    batch_features: int = 32
    window: int = 1  # tokens the head reads per position: itself and (window - 1) / 2 on each side
    seed: int = 20251201
    # Softmax over the context tokens only (what post-processing may pick), not over the question too.
    context_only: bool = False


def window_states(states: np.ndarray, local_starts: np.ndarray, window: int) -> np.ndarray:
    """Each token's states followed by its neighbours' (-r..+r, r = window // 2), zeros past a feature's edge.

    ``window`` 1 gives ``states`` unchanged. The order of the blocks is
    offset -r first, +r last; the ONNX head (``bert_graph``) builds the same.
    """
    if window == 1:
        return states
    radius = window // 2
    n, dim = states.shape
    sizes = np.diff(np.append(local_starts, n))
    position = np.arange(n) - np.repeat(local_starts, sizes)
    size_of = np.repeat(sizes, sizes)
    out = np.zeros((n, dim * window), states.dtype)
    for k, offset in enumerate(range(-radius, radius + 1)):
        ok = (position + offset >= 0) & (position + offset < size_of)
        out[ok, k * dim : (k + 1) * dim] = states[np.nonzero(ok)[0] + offset]
    return out


def _segments(tokens: TokenStates, picked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat token indices of the picked features, and each picked feature's start in them."""
    starts = tokens.offsets[picked]
    ends = tokens.offsets[picked + 1]
    sizes = ends - starts
    local_starts = np.zeros(len(picked), np.int64)
    local_starts[1:] = np.cumsum(sizes)[:-1]
    index = np.repeat(starts - local_starts, sizes) + np.arange(int(sizes.sum()))
    return index, local_starts


def _segment_softmax(scores: np.ndarray, local_starts: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Softmax of each column within each feature's tokens."""
    peak = np.maximum.reduceat(scores, local_starts, axis=0)
    e = np.exp(scores - peak[segment])
    return e / np.add.reduceat(e, local_starts, axis=0)[segment]


def _shift(values: np.ndarray, position: np.ndarray, size_of: np.ndarray, offset: int) -> np.ndarray:
    """out[i] = values[i + offset] when that token is in the same feature, else 0."""
    if offset == 0:
        return values
    out = np.zeros_like(values)
    ok = (position + offset >= 0) & (position + offset < size_of)
    index = np.nonzero(ok)[0]
    out[index] = values[index + offset]
    return out


def head_loss_and_grad(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, local_starts: np.ndarray, target: np.ndarray, l2: float,
    window: int = 1, allowed: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray]:  # fmt: skip
    """Mean cross-entropy (start + end) of a batch of features, and its gradient.

    The head's logit at token i is ``sum_k W_k . x[i + k - r] + b`` (r = window // 2,
    zero past a feature's edge), i.e. ``weight @ window_states(x)``, computed
    without building the windowed copy of ``x``.

    Args:
        x: (tokens, dim) float32 states of the batch's features, feature after feature.
        weight: (2, dim * window); bias: (2,).
        local_starts: (features,) where each feature's tokens begin in ``x``.
        target: (tokens, 2) the target distribution over each feature's tokens
            (each column sums to 1 within a feature).
        l2: weight decay (0.5 * l2 * |weight|^2 added to the loss).
        window: positions per token (odd).
        allowed: (tokens,) bool, the positions the softmax runs over (all when None); the
            target must be zero elsewhere.

    Returns:
        (loss, d loss / d weight, d loss / d bias).
    """
    n = len(local_starts)
    tokens, dim = x.shape
    sizes = np.diff(np.append(local_starts, tokens))
    segment = np.repeat(np.arange(n), sizes)
    position = np.arange(tokens) - np.repeat(local_starts, sizes)
    size_of = np.repeat(sizes, sizes)
    radius = window // 2
    # One pass over x for every block of the window: z[:, 2k:2k+2] = x @ W_k^T.
    stacked = weight.reshape(2, window, dim).transpose(1, 0, 2).reshape(2 * window, dim)
    z = x @ stacked.T
    scores = np.broadcast_to(bias, (tokens, 2)).copy()
    for k in range(window):
        scores += _shift(z[:, 2 * k : 2 * k + 2], position, size_of, k - radius)
    if allowed is not None:
        scores[~allowed] = -1e4  # exp() of it is 0: no probability, so no gradient, there
    p = _segment_softmax(scores, local_starts, segment)
    loss = -float(np.sum(target * np.log(np.maximum(p, 1e-30)))) / n + 0.5 * l2 * float(np.sum(weight * weight))
    delta = ((p - target) / n).astype(x.dtype)
    dz = np.concatenate([_shift(delta, position, size_of, -(k - radius)) for k in range(window)], axis=1)
    grad = (dz.T @ x).reshape(window, 2, dim).transpose(1, 0, 2).reshape(2, window * dim)
    return loss, grad + l2 * weight, delta.sum(axis=0)


def _targets_flat(tokens: TokenStates, picked: np.ndarray, local_starts: np.ndarray, targets: list) -> np.ndarray:
    total = int(tokens.offsets[picked + 1].sum() - tokens.offsets[picked].sum())
    flat = np.zeros((total, 2), np.float32)
    for j, i in enumerate(picked):
        answers = targets[i]
        for start, end in answers:
            flat[local_starts[j] + start, 0] += 1.0 / len(answers)
            flat[local_starts[j] + end, 1] += 1.0 / len(answers)
    return flat


def fit_head(
    tokens: TokenStates, targets: list[list[tuple[int, int]]], settings: FitSettings, *, log=None,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Fit the head with Adam on the features that hold an answer.

    Args:
        tokens: the states of the training features.
        targets: per feature (aligned with ``tokens``), its answers' (start, end) positions;
            features without any are not trained on.
        settings: hyperparameters; the seed fixes the initialisation and the batch order.
        log: called with (epoch, mean loss) after each epoch.
        allowed: ``context_tokens`` of the features; needed when ``settings.context_only``.

    Returns:
        (weight (2, dim) float32, bias (2,) float32, mean loss per epoch).
    """
    if settings.window < 1 or settings.window % 2 == 0:
        raise ValueError(f"the head's window must be odd and positive, not {settings.window}")
    if settings.context_only and allowed is None:
        raise ValueError("context_only needs the context tokens (context_tokens) of the features")
    rng = np.random.default_rng(settings.seed)
    dim = tokens.states.shape[1] * settings.window
    weight = rng.normal(0.0, 0.02, size=(2, dim)).astype(np.float32)
    bias = np.zeros(2, np.float32)
    m = [np.zeros_like(weight), np.zeros_like(bias)]
    v = [np.zeros_like(weight), np.zeros_like(bias)]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    trainable = np.array([i for i, t in enumerate(targets) if t], np.int64)
    if len(trainable) == 0:
        raise DatasetError("no training feature holds its answer: nothing to fit the head on")
    step = 0
    history = []
    for epoch in range(settings.epochs):
        order = rng.permutation(trainable)
        losses = []
        for first in range(0, len(order), settings.batch_features):
            picked = np.sort(order[first : first + settings.batch_features])
            index, local_starts = _segments(tokens, picked)
            x = tokens.states[index].astype(np.float32)
            target = _targets_flat(tokens, picked, local_starts, targets)
            mask = allowed[index] if settings.context_only else None
            loss, g_w, g_b = head_loss_and_grad(x, weight, bias, local_starts, target, settings.l2, settings.window, mask)
            losses.append(loss)
            step += 1
            for k, (param, grad) in enumerate(((weight, g_w), (bias, g_b))):
                m[k] = beta1 * m[k] + (1 - beta1) * grad
                v[k] = beta2 * v[k] + (1 - beta2) * grad * grad
                m_hat = m[k] / (1 - beta1**step)
                v_hat = v[k] / (1 - beta2**step)
                param -= settings.learning_rate * m_hat / (np.sqrt(v_hat) + eps)
        history.append(float(np.mean(losses)))
        if log is not None:
            log(epoch + 1, history[-1])
    return weight.astype(np.float32), bias.astype(np.float32), history


def head_logits(tokens: TokenStates, weight: np.ndarray, bias: np.ndarray, width: int, *, window: int = 1) -> list[np.ndarray]:
    """(width, 2) logits per feature from its states, padding positions at -10000 (as orch's batching gives)."""
    x = window_states(tokens.states.astype(np.float32), tokens.offsets[:-1], window)
    scores = x @ weight.T.astype(np.float32) + bias.astype(np.float32)
    out = []
    for i in range(len(tokens)):
        logits = np.full((width, 2), -10000.0, np.float32)
        part = scores[tokens.offsets[i] : tokens.offsets[i + 1]]
        logits[: len(part)] = part
        out.append(logits)
    return out
