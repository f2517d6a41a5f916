"""Batching with padding removal, for every backend.

SQuAD features are padded to 384 tokens, but most are shorter. BERT's
attention mask makes padded tokens invisible to real ones, so running a
batch cut to its longest real length gives the same logits on real
positions for far less work. Batches are cut to that exact length: on
ONNX Runtime (CPU) this ran 15-20% faster than rounding up to a few fixed
bucket lengths (``benchmarks/single_node.py``, docs/performance.md). A
backend that compiles one engine per shape (DeepSparse) pads each batch to
its own nearest ``BUCKETS`` length inside ``run``.

Samples are sorted by length before batching, so batch-mates have similar
lengths; results are scattered back to the caller's order.

Every position at or beyond a sample's real length is set to
``PAD_LOGIT`` (-10000.0) in the returned logits, with or without padding
removal: those positions are padding, never answer candidates (the SQuAD
post-processing only considers document tokens, all of which are real), and
this makes a sample's answer independent of its batch-mates.
"""

from __future__ import annotations

import numpy as np

from orchestrator.backends.base import Backend
from orchestrator.errors import ModelError

MAX_SEQ_LENGTH = 384
BUCKETS: tuple[int, ...] = (64, 96, 128, 192, 256, 320, 384)
PAD_LOGIT = -10000.0


def bucket_length(n: int) -> int:
    """The smallest bucket that holds ``n`` real tokens.

    Raises:
        ValueError: ``n`` is negative or above ``MAX_SEQ_LENGTH``.
    """
    if n < 0 or n > MAX_SEQ_LENGTH:
        raise ValueError(f"sequence length {n} is outside 0..{MAX_SEQ_LENGTH}")
    for bucket in BUCKETS:
        if n <= bucket:
            return bucket
    return MAX_SEQ_LENGTH  # unreachable: the last bucket is MAX_SEQ_LENGTH


def predict(
    backend: Backend,
    input_ids: np.ndarray,
    input_mask: np.ndarray,
    segment_ids: np.ndarray,
    lengths: np.ndarray,
    *,
    batch_size: int,
    remove_padding: bool = True,
) -> np.ndarray:
    """Run every sample through a loaded backend, in batches.

    Args:
        backend: a loaded backend.
        input_ids, input_mask, segment_ids: integer arrays (n, 384), any int dtype
            (cast to int64 per batch).
        lengths: (n,) real (unpadded) lengths, equal to ``input_mask.sum(1)``.
        batch_size: the most samples per backend call (>= 1).
        remove_padding: cut each batch to its longest real length.

    Returns:
        (n, 384, 2) float32 logits in the input order, start and end
        interleaved per token (``np.stack([start, end], -1)``); positions at or
        beyond a sample's length hold ``PAD_LOGIT``.

    Raises:
        ValueError: shapes disagree, ``batch_size`` < 1, or ``lengths`` does not
            match ``input_mask``.
        ModelError: padding removal is asked for but the model fixes its
            sequence length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    input_ids = np.asarray(input_ids)
    n, width = input_ids.shape
    if width != MAX_SEQ_LENGTH or input_mask.shape != (n, width) or segment_ids.shape != (n, width):
        raise ValueError(
            f"inputs must all be (n, {MAX_SEQ_LENGTH}); got {input_ids.shape}, {input_mask.shape}, {segment_ids.shape}"
        )
    lengths = np.asarray(lengths).astype(np.int64)
    if lengths.shape != (n,):
        raise ValueError(f"lengths must be ({n},), not {lengths.shape}")
    # Cheap next to inference, and a wrong length would silently cut real tokens.
    if not np.array_equal(lengths, np.asarray(input_mask).sum(axis=1)):
        raise ValueError("lengths differ from input_mask.sum(1)")
    fixed = backend.fixed_seq_length
    if remove_padding and fixed is not None:
        raise ModelError(
            f"the model loaded by backend {backend.name!r} has a fixed sequence length of {fixed}; padding removal needs a dynamic one",
            hint="turn padding removal off for this model",
        )

    out = np.full((n, MAX_SEQ_LENGTH, 2), PAD_LOGIT, dtype=np.float32)
    order = np.argsort(lengths, kind="stable") if remove_padding else np.arange(n)
    for first in range(0, n, batch_size):
        index = order[first : first + batch_size]
        width = max(1, int(lengths[index].max())) if remove_padding else MAX_SEQ_LENGTH
        start, end = backend.run(
            input_ids[index, :width].astype(np.int64),
            input_mask[index, :width].astype(np.int64),
            segment_ids[index, :width].astype(np.int64),
        )
        out[index, :width, 0] = start
        out[index, :width, 1] = end
    # Padding positions are never answers; mask them so batch-mates do not matter.
    padding = np.arange(MAX_SEQ_LENGTH)[None, :] >= lengths[:, None]
    out[padding] = PAD_LOGIT
    return out
