"""Read and validate a SQuAD v1.1 JSON file into examples.

The splitting of a context into whitespace-separated words follows the MLPerf
reference ``read_squad_examples`` (mlcommons/inference
``language/bert/create_squad_data.py``, Apache-2.0, itself from NVIDIA
DeepLearningExamples and Google's BERT), including its notion of whitespace:
space, tab, CR, LF and U+202F only (a no-break space U+00A0 stays inside a word).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import DatasetError

_FIX_DATASET = "give a SQuAD v1.1 dev JSON file (run: orch fetch squad-dev)"


@dataclass(frozen=True)
class SquadExample:
    """One question of the data set, in file order.

    Attributes:
        qas_id: the question's ``id``.
        question_text: the question.
        doc_tokens: the context split on the reference's whitespace; examples of one
            paragraph share the same tuple object.
        answers: the ground-truth answer texts (``qa["answers"][*]["text"]``).
        paragraph_index: running index of the paragraph over the whole file.
    """

    qas_id: str
    question_text: str
    doc_tokens: tuple[str, ...]
    answers: tuple[str, ...]
    paragraph_index: int


def is_whitespace(c: str) -> bool:
    """The reference's whitespace test (note U+202F, and no U+00A0)."""
    return c == " " or c == "\t" or c == "\r" or c == "\n" or ord(c) == 0x202F


def split_context(text: str) -> tuple[str, ...]:
    """Split a context into words exactly as ``read_squad_examples`` does."""
    doc_tokens: list[str] = []
    prev_is_whitespace = True
    for c in text:
        if is_whitespace(c):
            prev_is_whitespace = True
        else:
            if prev_is_whitespace:
                doc_tokens.append(c)
            else:
                doc_tokens[-1] += c
            prev_is_whitespace = False
    return tuple(doc_tokens)


def load_squad_json(path: Path) -> dict:
    """Load a SQuAD v1.1 file and check its shape.

    Args:
        path: the JSON file.

    Returns:
        The parsed JSON object (with ``data[].paragraphs[].qas[]``).

    Raises:
        DatasetError: the file is missing, not JSON, or not SQuAD v1.1.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"SQuAD data set {path} does not exist", hint=_FIX_DATASET)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0]
        raise DatasetError(f"SQuAD data set {path} is not JSON ({reason})", hint=_FIX_DATASET) from None
    _check_shape(path, data)
    return data


def _bad(path: Path, where: str, what: str) -> DatasetError:
    return DatasetError(f"SQuAD data set {path} is not SQuAD v1.1: {where} {what}", hint=_FIX_DATASET)


def _check_shape(path: Path, data: object) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise _bad(path, "the top level", 'has no "data" list')
    version = str(data.get("version", "1.1"))
    if version.lstrip("v").startswith("2"):
        raise _bad(path, "the file", f'says "version": "{version}" (SQuAD 2.0 is not what MLPerf BERT uses)')
    questions = 0
    for a, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise _bad(path, f"data[{a}]", 'has no "paragraphs" list')
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise _bad(path, where, 'has no "context" string')
            if not isinstance(paragraph.get("qas"), list):
                raise _bad(path, where, 'has no "qas" list')
            for q, qa in enumerate(paragraph["qas"]):
                _check_qa(path, f"{where}.qas[{q}]", qa)
                questions += 1
    if questions == 0:
        raise _bad(path, "the file", "holds no questions")


def _check_qa(path: Path, where: str, qa: object) -> None:
    if not isinstance(qa, dict):
        raise _bad(path, where, "is not an object")
    if not isinstance(qa.get("id"), str):
        raise _bad(path, where, 'has no "id" string')
    if not isinstance(qa.get("question"), str):
        raise _bad(path, where, 'has no "question" string')
    answers = qa.get("answers")
    # The official v1.1 evaluation takes the max over ground truths: it needs at least one.
    if not isinstance(answers, list) or not answers:
        raise _bad(path, where, 'has no "answers" (v1.1 needs at least one per question)')
    for answer in answers:
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            raise _bad(path, where, 'has an answer without a "text" string')


def read_examples(path: Path) -> list[SquadExample]:
    """Read every question of a SQuAD v1.1 file, in file order (the reference's order).

    Args:
        path: the JSON file.

    Returns:
        One ``SquadExample`` per question.

    Raises:
        DatasetError: see ``load_squad_json``.
    """
    data = load_squad_json(path)
    examples: list[SquadExample] = []
    paragraph_index = 0
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            doc_tokens = split_context(paragraph["context"])
            for qa in paragraph["qas"]:
                examples.append(
                    SquadExample(
                        qas_id=qa["id"],
                        question_text=qa["question"],
                        doc_tokens=doc_tokens,
                        answers=tuple(a["text"] for a in qa["answers"]),
                        paragraph_index=paragraph_index,
                    )
                )
            paragraph_index += 1
    return examples
