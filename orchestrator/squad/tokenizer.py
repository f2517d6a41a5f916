"""Load and validate the uncased WordPiece vocabulary of MLPerf BERT.

The MLPerf reference builds ``transformers.BertTokenizer(vocab_file)`` with the
transformers 4.x of its time, i.e. the pure-Python WordPiece tokenizer. In
transformers 5 that class is named ``BertTokenizerLegacy`` (``BertTokenizer``
became the Rust-backed one, which differs in edge cases), so we use it to get the
reference's tokens.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from orchestrator.errors import DatasetError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_FIX_VOCAB = "give the BERT uncased vocab.txt (run: orch fetch vocab)"
# A WordPiece vocab has one token per line; a few odd lines are tolerated, more
# means the file is something else (a tokenizer.json, a sentencepiece model, text).
_MAX_ODD_LINE_FRACTION = 0.01


def validate_vocab(path: Path) -> list[str]:
    """Check that ``path`` is a WordPiece vocabulary and return its tokens.

    Args:
        path: the vocab.txt file.

    Returns:
        The tokens, one per line, in id order.

    Raises:
        DatasetError: the file is missing, not UTF-8 text, lacks a special token, or
            is not mostly one token per line.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"vocabulary {path} does not exist", hint=_FIX_VOCAB)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"vocabulary {path} is not UTF-8 text, so not a WordPiece vocab.txt", hint=_FIX_VOCAB) from None
    tokens = [line.rstrip("\n").rstrip("\r") for line in text.split("\n")]
    if tokens and tokens[-1] == "":
        tokens.pop()  # the newline that ends the last line
    missing = [t for t in SPECIAL_TOKENS if t not in set(tokens)]
    if missing:
        raise DatasetError(
            f"vocabulary {path} is not a BERT WordPiece vocab: it lacks {' '.join(missing)}", hint=_FIX_VOCAB
        )
    odd = sum(1 for t in tokens if not t or any(c.isspace() for c in t))
    if odd > _MAX_ODD_LINE_FRACTION * len(tokens):
        raise DatasetError(
            f"vocabulary {path} is not a WordPiece vocab: {odd} of its {len(tokens)} lines are not one token",
            hint=_FIX_VOCAB,
        )
    return tokens


def _quiet_transformers() -> None:
    # transformers warns that PyTorch is absent on import; we never need it.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, mtime_ns: int, size: int):
    _quiet_transformers()
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy as PythonBertTokenizer
    except ImportError:
        # transformers 4.x: BertTokenizer is still the pure-Python one the reference used.
        from transformers import BertTokenizer as PythonBertTokenizer

    return PythonBertTokenizer(path, do_lower_case=True)


def load_tokenizer(path: Path):
    """The reference's uncased WordPiece tokenizer for ``path`` (validated, then cached).

    Args:
        path: the vocab.txt file.

    Returns:
        A ``BertTokenizerLegacy`` with ``do_lower_case=True``.

    Raises:
        DatasetError: see ``validate_vocab``.
    """
    path = Path(path).resolve()
    validate_vocab(path)
    stat = path.stat()
    return _tokenizer(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1)
def basic_tokenizer():
    """The BERT BasicTokenizer (lower case, accents stripped) used by ``get_final_text``."""
    _quiet_transformers()
    from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer

    return BasicTokenizer(do_lower_case=True)
