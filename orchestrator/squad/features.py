"""SQuAD examples to BERT features, as the MLPerf reference makes them.

A port of ``convert_examples_to_features`` and ``_check_is_max_context`` from
mlcommons/inference ``language/bert/create_squad_data.py`` (Apache-2.0; NVIDIA
DeepLearningExamples, Google AI Language), evaluation path only
(``is_training=False``, so ``_improve_answer_span`` is never used). The features,
their order and their ids are the reference's; the one change is speed: a
paragraph's context is WordPiece-tokenized once instead of once per question,
which gives the same tokens because the tokenizer is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.squad.dataset import SquadExample


@dataclass(frozen=True)
class DocSpan:
    """A window of a context's WordPiece tokens."""

    start: int
    length: int


@dataclass(frozen=True)
class FeatureInfo:
    """What accuracy scoring needs to know about one feature (one QSL sample).

    Attributes:
        example_index: index of its example (question) in file order.
        doc_span_index: which window of the context this feature holds.
        tokens: ``[CLS] query [SEP] context-window [SEP]`` (unpadded).
        doc_offset: position of the first context token (``len(query) + 2``).
        tok_to_orig: for each context token of the window, the index of its word in
            ``example.doc_tokens``.
        is_max_context: for each context token of the window, whether this window gives
            it the most context.
    """

    example_index: int
    doc_span_index: int
    tokens: tuple[str, ...]
    doc_offset: int
    tok_to_orig: tuple[int, ...]
    is_max_context: tuple[bool, ...]

    @property
    def token_to_orig_map(self) -> dict[int, int]:
        """The reference's ``token_to_orig_map``: feature position -> word index."""
        return {self.doc_offset + i: orig for i, orig in enumerate(self.tok_to_orig)}

    @property
    def token_is_max_context(self) -> dict[int, bool]:
        """The reference's ``token_is_max_context``: feature position -> bool."""
        return {self.doc_offset + i: flag for i, flag in enumerate(self.is_max_context)}


@dataclass
class FeatureArrays:
    """Model inputs of all features, row i = QSL sample i."""

    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    infos: list[FeatureInfo]


def check_is_max_context(doc_spans: Sequence[DocSpan], cur_span_index: int, position: int) -> bool:
    """Whether span ``cur_span_index`` is the one giving token ``position`` most context.

    The score is the smaller of the left and right context, plus 0.01 x span length;
    the first best span wins ties (reference ``_check_is_max_context``).
    """
    best_score = None
    best_span_index = None
    for span_index, doc_span in enumerate(doc_spans):
        end = doc_span.start + doc_span.length - 1
        if position < doc_span.start or position > end:
            continue
        num_left_context = position - doc_span.start
        num_right_context = end - position
        score = min(num_left_context, num_right_context) + 0.01 * doc_span.length
        if best_score is None or score > best_score:
            best_score = score
            best_span_index = span_index
    return cur_span_index == best_span_index


def doc_spans_for(num_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[DocSpan]:
    """The sliding windows over ``num_tokens`` context tokens (reference loop)."""
    doc_spans = []
    start_offset = 0
    while start_offset < num_tokens:
        length = min(num_tokens - start_offset, max_tokens_for_doc)
        doc_spans.append(DocSpan(start=start_offset, length=length))
        if start_offset + length == num_tokens:
            break
        start_offset += min(length, doc_stride)
    return doc_spans


def _tokenize_doc(tokenizer, doc_tokens: Sequence[str]) -> tuple[list[int], list[str]]:
    tok_to_orig_index: list[int] = []
    all_doc_tokens: list[str] = []
    for i, token in enumerate(doc_tokens):
        for sub_token in tokenizer.tokenize(token):
            tok_to_orig_index.append(i)
            all_doc_tokens.append(sub_token)
    return tok_to_orig_index, all_doc_tokens


def convert_examples_to_features(
    examples: Sequence[SquadExample],
    tokenizer,
    *,
    max_seq_length: int,
    doc_stride: int,
    max_query_length: int,
) -> FeatureArrays:
    """Turn examples into padded model inputs plus bookkeeping, in the reference's order.

    Args:
        examples: from ``read_examples``, in file order.
        tokenizer: the WordPiece tokenizer (``load_tokenizer``).
        max_seq_length: padded length of every feature (384 for MLPerf).
        doc_stride: step between context windows (128).
        max_query_length: questions are cut to this many tokens (64).

    Returns:
        int32 arrays ``(N, max_seq_length)`` and one ``FeatureInfo`` per row.
    """
    rows_ids: list[list[int]] = []
    rows_len: list[int] = []
    rows_seg_a: list[int] = []  # number of segment-0 tokens ([CLS] query [SEP])
    infos: list[FeatureInfo] = []
    doc_cache: dict[int, tuple[list[int], list[str]]] = {}

    for example_index, example in enumerate(examples):
        query_tokens = tokenizer.tokenize(example.question_text)[:max_query_length]
        if example.paragraph_index not in doc_cache:
            doc_cache = {example.paragraph_index: _tokenize_doc(tokenizer, example.doc_tokens)}
        tok_to_orig_index, all_doc_tokens = doc_cache[example.paragraph_index]

        # The -3 accounts for [CLS], [SEP] and [SEP].
        max_tokens_for_doc = max_seq_length - len(query_tokens) - 3
        doc_spans = doc_spans_for(len(all_doc_tokens), max_tokens_for_doc, doc_stride)
        doc_offset = len(query_tokens) + 2
        head = ["[CLS]", *query_tokens, "[SEP]"]

        for doc_span_index, doc_span in enumerate(doc_spans):
            window = range(doc_span.start, doc_span.start + doc_span.length)
            tokens = head + [all_doc_tokens[i] for i in window] + ["[SEP]"]
            infos.append(
                FeatureInfo(
                    example_index=example_index,
                    doc_span_index=doc_span_index,
                    tokens=tuple(tokens),
                    doc_offset=doc_offset,
                    tok_to_orig=tuple(tok_to_orig_index[i] for i in window),
                    is_max_context=tuple(check_is_max_context(doc_spans, doc_span_index, i) for i in window),
                )
            )
            rows_ids.append(tokenizer.convert_tokens_to_ids(tokens))
            rows_len.append(len(tokens))
            rows_seg_a.append(doc_offset)

    n = len(rows_ids)
    input_ids = np.zeros((n, max_seq_length), dtype=np.int32)
    input_mask = np.zeros((n, max_seq_length), dtype=np.int32)
    segment_ids = np.zeros((n, max_seq_length), dtype=np.int32)
    for row, (ids, length, seg_a) in enumerate(zip(rows_ids, rows_len, rows_seg_a)):
        # The reference asserts the padded length; an over-long row would be a bug here.
        assert length <= max_seq_length, (row, length)
        input_ids[row, :length] = ids
        input_mask[row, :length] = 1
        segment_ids[row, seg_a:length] = 1  # context tokens and the last [SEP]
    return FeatureArrays(input_ids=input_ids, input_mask=input_mask, segment_ids=segment_ids, infos=infos)
