"""The QA head's graph (the concatenated states times a small matrix, then shifted slices summed)
equals the plain form: the windowed states (zeros past the real tokens) times the head's weight."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.models.bert_graph import BertConfig, build_bert_qa_model, build_bert_states_model

CONFIG = BertConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2, intermediate_size=16)


def _weights(rng):
    h, i = CONFIG.hidden_size, CONFIG.intermediate_size
    w = {
        "embeddings.word_embeddings.weight": rng.normal(size=(50, h)),
        "embeddings.position_embeddings.weight": rng.normal(size=(16, h)),
        "embeddings.token_type_embeddings.weight": rng.normal(size=(2, h)),
        "embeddings.LayerNorm.weight": rng.normal(1, 0.1, size=h),
        "embeddings.LayerNorm.bias": rng.normal(size=h),
    }
    for n in range(CONFIG.num_hidden_layers):
        p = f"encoder.layer.{n}."
        for name, (out, inp) in {
            "attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
            "attention.output.dense": (h, h), "intermediate.dense": (i, h), "output.dense": (h, i),
        }.items():  # fmt: skip
            w[p + name + ".weight"] = rng.normal(0, 0.3, size=(out, inp))
            w[p + name + ".bias"] = rng.normal(0, 0.1, size=out)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + ln + ".weight"] = rng.normal(1, 0.1, size=h)
            w[p + ln + ".bias"] = rng.normal(0, 0.1, size=h)
    return {k: v.astype(np.float32) for k, v in w.items()}


def _run(model, feeds):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("layers,window", [((2,), 1), ((0, 1, 2), 1), ((1, 2), 3), ((0, 2), 5)])
def test_the_head_graph_equals_the_windowed_states_times_the_weight(layers, window):
    rng = np.random.default_rng(window + len(layers))
    weights = _weights(rng)
    width = CONFIG.hidden_size * len(layers) * window
    qa_weight = rng.normal(size=(2, width)).astype(np.float32)
    qa_bias = rng.normal(size=2).astype(np.float32)
    seq, lengths = 12, np.array([12, 7, 3])
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 50, size=(3, seq)) * mask
    feeds = {"input_ids": ids, "input_mask": mask, "segment_ids": np.zeros_like(ids)}

    model = build_bert_qa_model(weights, CONFIG, qa_weight, qa_bias, head_layers=layers, head_window=window)
    start, end = _run(model, feeds)
    (states,) = _run(build_bert_states_model(weights, CONFIG, layers), feeds)
    # The plain form, in float64: each position's states followed by its neighbours' (-r..+r), zeros past the real tokens.
    z = states.astype(np.float64) * mask[..., None]
    r = window // 2
    padded = np.pad(z, ((0, 0), (r, r), (0, 0)))
    windowed = np.concatenate([padded[:, k : k + seq] for k in range(window)], axis=-1)
    logits = windowed @ qa_weight.astype(np.float64).T + qa_bias

    real = mask.astype(bool)
    np.testing.assert_allclose(start[real], logits[..., 0][real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(end[real], logits[..., 1][real], rtol=1e-4, atol=1e-4)
    # A position next to padding reads zeros there, whatever the padded tokens are.
    if window > 1:
        other = dict(feeds, input_ids=np.where(mask == 1, ids, 7))
        start2, _ = _run(model, other)
        np.testing.assert_allclose(start2[real], start[real], rtol=1e-5, atol=1e-5)
