"""The MLPerf BERT QSL contents: SQuAD features built once and cached on disk.

``load_features`` returns a ``SquadFeatures`` whose model inputs are plain int32
arrays (row i = QSL sample i). The examples and per-feature bookkeeping that
accuracy scoring needs sit in a separate pickle and load only when asked for, so
actors that just run the model stay light.

Cache: ``<cache>/features/<key>.npz`` (arrays, uncompressed) and ``<key>.pkl``
(bookkeeping); the key is a sha256 over the data set bytes, the vocab bytes, the
parameters and ``FORMAT_VERSION``. Both files are written to a temporary name and
renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np

from orchestrator.errors import DatasetError
from orchestrator.fileio import atomic_write, cached_sha256, sha256_file
from orchestrator.paths import cache_subdir

MAX_SEQ_LENGTH = 384
MAX_QUERY_LENGTH = 64
DOC_STRIDE = 128
# Bump when the cached files' layout or the feature recipe changes.
FORMAT_VERSION = 1
_TOKENIZER_ID = "transformers.BertTokenizerLegacy(do_lower_case=True)"


class SquadFeatures:
    """The features of one data set + vocab, ready for loadgen's QSL.

    Attributes:
        input_ids, input_mask, segment_ids: np.int32 arrays (N, 384); callers cast to
            int64 per batch.
        lengths: np.int32 (N,), real unpadded length of each feature.
        dataset_path, vocab_path: absolute paths they were built from.
        cache_key: hex sha256 naming the cache files (data set, vocab, parameters).
        dataset_sha256: the data set file's sha256.
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        *,
        dataset_path: Path,
        vocab_path: Path,
        cache_key: str,
        bookkeeping_path: Path,
        params: dict,
        dataset_sha256: str = "",
    ) -> None:
        self.input_ids = arrays["input_ids"]
        self.input_mask = arrays["input_mask"]
        self.segment_ids = arrays["segment_ids"]
        self.lengths = arrays["lengths"]
        self.dataset_path = dataset_path
        self.vocab_path = vocab_path
        self.cache_key = cache_key
        self.dataset_sha256 = dataset_sha256
        self.params = params
        self._bookkeeping_path = bookkeeping_path
        self._bookkeeping: dict | None = None

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def __repr__(self) -> str:
        return f"SquadFeatures({len(self)} features from {self.dataset_path.name}, key {self.cache_key[:12]})"

    def __getstate__(self) -> dict:
        # Shipping features to an actor sends the arrays only; bookkeeping reloads lazily.
        state = dict(self.__dict__)
        state["_bookkeeping"] = None
        return state

    def _load_bookkeeping(self) -> dict:
        if self._bookkeeping is None:
            if not self._bookkeeping_path.is_file():
                # The arrays came from a cache on which the pickle was removed: rebuild both.
                _build_and_store(self.dataset_path, self.vocab_path, self.params, self._bookkeeping_path.with_suffix(".npz"))
            with open(self._bookkeeping_path, "rb") as f:
                self._bookkeeping = pickle.load(f)
        return self._bookkeeping

    @property
    def examples(self):
        """The questions (``list[SquadExample]``) in file order; loaded on first use."""
        return self._load_bookkeeping()["examples"]

    @property
    def infos(self):
        """Per-feature bookkeeping (``list[FeatureInfo]``), row-aligned; loaded on first use."""
        return self._load_bookkeeping()["infos"]


def feature_cache_key(dataset_path: Path, vocab_path: Path, params: dict, *, dataset_sha256: str | None = None) -> str:
    """The cache key: sha256 over data set bytes, vocab bytes, parameters and format version."""
    payload = {
        "dataset_sha256": dataset_sha256 or sha256_file(dataset_path),
        "vocab_sha256": sha256_file(vocab_path),
        "params": params,
        "tokenizer": _TOKENIZER_ID,
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()




def _build_and_store(dataset_path: Path, vocab_path: Path, params: dict, npz_path: Path) -> dict[str, np.ndarray]:
    from orchestrator.squad.dataset import read_examples
    from orchestrator.squad.features import convert_examples_to_features
    from orchestrator.squad.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(vocab_path)
    examples = read_examples(dataset_path)
    built = convert_examples_to_features(examples, tokenizer, **params)
    arrays = {
        "input_ids": built.input_ids,
        "input_mask": built.input_mask,
        "segment_ids": built.segment_ids,
        "lengths": built.input_mask.sum(axis=1, dtype=np.int32),
    }
    # Bookkeeping first, arrays last: the .npz is what marks a cache hit.
    bookkeeping = {"examples": examples, "infos": built.infos}
    atomic_write(npz_path.with_suffix(".pkl"), lambda f: pickle.dump(bookkeeping, f, protocol=pickle.HIGHEST_PROTOCOL))
    atomic_write(npz_path, lambda f: np.savez(f, **arrays))
    return arrays


def _check_params(max_seq_length: int, max_query_length: int, doc_stride: int) -> None:
    if min(max_seq_length, max_query_length, doc_stride) < 1 or max_query_length + 3 >= max_seq_length:
        raise DatasetError(
            f"feature parameters max_seq_length={max_seq_length} max_query_length={max_query_length} "
            f"doc_stride={doc_stride} are unusable: all must be positive and max_query_length + 3 < max_seq_length"
        )


def load_features(
    dataset_path: Path,
    vocab_path: Path,
    *,
    cache_dir: Path | None = None,
    max_seq_length: int = MAX_SEQ_LENGTH,
    max_query_length: int = MAX_QUERY_LENGTH,
    doc_stride: int = DOC_STRIDE,
) -> SquadFeatures:
    """Features of a SQuAD v1.1 file, from the cache or built (then cached).

    Args:
        dataset_path: SQuAD v1.1 JSON (the dev set for MLPerf).
        vocab_path: the BERT uncased WordPiece vocab.txt.
        cache_dir: where the cache files go; default ``cache_subdir("features")``.
        max_seq_length, max_query_length, doc_stride: MLPerf's 384 / 64 / 128 unless
            testing.

    Returns:
        The ``SquadFeatures``.

    Raises:
        DatasetError: the data set or vocab is missing or malformed, or the parameters
            are unusable.
    """
    from orchestrator.squad.dataset import load_squad_json
    from orchestrator.squad.tokenizer import validate_vocab

    dataset_path = Path(dataset_path).expanduser().resolve()
    vocab_path = Path(vocab_path).expanduser().resolve()
    _check_params(max_seq_length, max_query_length, doc_stride)
    params = {"max_seq_length": max_seq_length, "max_query_length": max_query_length, "doc_stride": doc_stride}
    if not dataset_path.is_file():
        load_squad_json(dataset_path)  # raises the one-line "does not exist" error
    validate_vocab(vocab_path)

    dataset_sha256 = cached_sha256(dataset_path)
    key = feature_cache_key(dataset_path, vocab_path, params, dataset_sha256=dataset_sha256)
    folder = Path(cache_dir) if cache_dir is not None else cache_subdir("features")
    folder.mkdir(parents=True, exist_ok=True)
    npz_path = folder / f"{key}.npz"
    arrays = None
    if npz_path.is_file():
        try:
            with np.load(npz_path) as npz:
                arrays = {name: npz[name] for name in ("input_ids", "input_mask", "segment_ids", "lengths")}
        except (OSError, KeyError, ValueError):
            arrays = None  # a damaged cache file: rebuild it below
    if arrays is None:
        arrays = _build_and_store(dataset_path, vocab_path, params, npz_path)
    return SquadFeatures(
        arrays,
        dataset_path=dataset_path,
        vocab_path=vocab_path,
        cache_key=key,
        bookkeeping_path=npz_path.with_suffix(".pkl"),
        params=params,
        dataset_sha256=dataset_sha256,
    )
