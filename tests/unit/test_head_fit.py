"""The numpy head fit: its gradient is the loss's, the window is the same in numpy and ONNX, answers map to tokens."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.models import head_fit


def _batch():
    rng = np.random.default_rng(0)
    sizes = np.array([5, 3, 7])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    x = rng.normal(size=(15, 4))
    target = np.zeros((15, 2))
    target[[1, 6, 12], 0] = 1
    target[[3, 7], 1] = 1
    target[[9, 10], 1] = 0.5  # two answers in one feature: half each
    return rng, starts, x, target


@pytest.mark.parametrize("window", [1, 3, 5])
def test_gradient_matches_finite_differences(window):
    rng, starts, x, target = _batch()
    weight, bias = rng.normal(size=(2, 4 * window)), rng.normal(size=2)
    loss, g_w, g_b = head_fit.head_loss_and_grad(x, weight, bias, starts, target, 0.1, window)
    numeric = np.zeros_like(weight)
    for index in np.ndindex(weight.shape):
        up, down = weight.copy(), weight.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        numeric[index] = (head_fit.head_loss_and_grad(x, up, bias, starts, target, 0.1, window)[0]
                          - head_fit.head_loss_and_grad(x, down, bias, starts, target, 0.1, window)[0]) / 2e-6  # fmt: skip
    np.testing.assert_allclose(g_w, numeric, atol=1e-6)
    # The same loss as the head over an explicit windowed copy of the states.
    plain = head_fit.head_loss_and_grad(head_fit.window_states(x, starts, window), weight, bias, starts, target, 0.1, 1)
    assert abs(plain[0] - loss) < 1e-12 and np.allclose(plain[1], g_w) and np.allclose(plain[2], g_b)


def test_a_context_only_softmax_ignores_the_question_tokens():
    """Positions outside ``allowed`` get no probability: the loss does not depend on their scores, and its gradient is still exact."""
    rng, starts, x, target = _batch()
    allowed = np.ones(15, bool)
    allowed[[0, 5, 8, 13]] = False  # no target sits there
    weight, bias = rng.normal(size=(2, 4 * 3)), rng.normal(size=2)
    loss, g_w, _ = head_fit.head_loss_and_grad(x, weight, bias, starts, target, 0.1, 3, allowed)
    assert loss < head_fit.head_loss_and_grad(x, weight, bias, starts, target, 0.1, 3)[0]  # less mass to share
    numeric = np.zeros_like(weight)
    for index in np.ndindex(weight.shape):
        up, down = weight.copy(), weight.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        numeric[index] = (head_fit.head_loss_and_grad(x, up, bias, starts, target, 0.1, 3, allowed)[0]
                          - head_fit.head_loss_and_grad(x, down, bias, starts, target, 0.1, 3, allowed)[0]) / 2e-6  # fmt: skip
    np.testing.assert_allclose(g_w, numeric, atol=1e-6)


def test_context_tokens_are_the_positions_post_processing_may_pick():
    class Info:
        def __init__(self, doc_offset, context):
            self.doc_offset, self.tok_to_orig = doc_offset, tuple(range(context))

    offsets = np.array([0, 8, 14])  # [CLS] q q [SEP] c c c [SEP] | [CLS] q [SEP] c c [SEP]
    allowed = head_fit.context_tokens([Info(4, 3), Info(3, 2)], offsets)
    assert np.nonzero(allowed)[0].tolist() == [4, 5, 6, 11, 12]


def test_window_never_crosses_features():
    x = np.arange(1, 8, dtype=np.float64)[:, None]  # features [1 2 3] and [4 5 6 7]
    w = head_fit.window_states(x, np.array([0, 3]), 3)
    assert w.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 0], [0, 4, 5], [4, 5, 6], [5, 6, 7], [6, 7, 0]]


def test_fit_learns_a_separable_toy_and_is_deterministic():
    rng = np.random.default_rng(1)
    sizes = rng.integers(5, 12, size=60)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    states = rng.normal(size=(offsets[-1], 6)).astype(np.float16)
    targets = []
    for i in range(60):
        start = int(rng.integers(0, sizes[i] - 1))
        states[offsets[i] + start, 0] = 4.0  # the start token says so in dimension 0,
        states[offsets[i] + start + 1, 1] = 4.0  # the end token in dimension 1
        targets.append([(start, start + 1)])
    tokens = head_fit.TokenStates(states, offsets)
    settings = head_fit.FitSettings(epochs=30, learning_rate=0.05, l2=0.0, batch_features=16)
    w, b, history = head_fit.fit_head(tokens, targets, settings)
    assert history[-1] < 0.2 * history[0]
    logits = head_fit.head_logits(tokens, w, b, 16)
    assert all(int(np.argmax(lg[:, 0])) == t[0][0] and int(np.argmax(lg[:, 1])) == t[0][1] for lg, t in zip(logits, targets))
    again = head_fit.fit_head(tokens, targets, settings)
    assert np.array_equal(again[0], w) and np.array_equal(again[1], b)


def test_answers_map_to_their_tokens_and_cut_answers_are_dropped():
    data = {"data": [{"title": "t", "paragraphs": [{"context": "The cat sat  on the mat.", "qas": [
        {"id": "q", "question": "?", "answers": [{"text": "sat on", "answer_start": 8}, {"text": "mat.", "answer_start": 20},
                                                 {"text": "bad", "answer_start": 99}]}]}]}]}  # fmt: skip
    assert head_fit.answer_word_spans(data) == [[(2, 3), (5, 5)]]

    class Info:
        example_index, doc_offset = 0, 4
        tok_to_orig = (0, 1, 2, 3, 4, 5, 5)  # "mat." is two word pieces

    assert head_fit.token_targets([Info()], [[(2, 3), (5, 5)]]) == [[(6, 7), (9, 10)]]

    class Cut(Info):
        tok_to_orig = (3, 4, 5)  # the window starts inside the first answer

    assert head_fit.token_targets([Cut()], [[(2, 3), (5, 5)]]) == [[(6, 6)]]


def test_split_keeps_articles_whole():
    data = {"version": "1.1", "data": [{"title": t, "paragraphs": []} for t in ("a", "b", "c")]}
    train, held = head_fit.split_by_article(data, ["b"])
    assert [a["title"] for a in train["data"]] == ["a", "c"] and [a["title"] for a in held["data"]] == ["b"]
    with pytest.raises(Exception, match="not in the data set"):
        head_fit.split_by_article(data, ["z"])
