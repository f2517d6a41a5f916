"""The Offline query in the driver: loadgen's two lists, cut into chunks window by window.

The driver's cost per sample has to stay small next to what loadgen's Python
binding costs anyway (about 1 µs to build and complete one response here;
``benchmarks/driver_scale.py`` measures both): every extra 100 ns per sample
is about a tenth of the ceiling. So the query is handed out in *windows* of
``WINDOW`` consecutive samples, each prepared when the hand-out reaches it:

- a window's sample indices are converted from loadgen's list to 2-byte
  integers (what travels to the workers);
- a *sorted* window is ordered longest sample first (a radix sort of 2-byte
  lengths), its ids gathered into that order: chunks of a few samples (slow
  CPU workers) then hold alike lengths, which padding removal needs (random
  chunks of 16-64 samples cost 10-40% more compute in batches of 8 on the
  SQuAD part);
- a *plain* window keeps loadgen's order: its chunks' ids are slices of
  loadgen's own list, with no conversion at all. A window is plain when every
  worker's chunks are large (``SORT_BELOW`` samples or more: fast workers, the
  driver-bound case), since a worker sorts a large chunk inside itself
  (``backends.batching.predict``) as well as the driver could.

The first chunks go out a few milliseconds after loadgen issues the query;
the rest of it is prepared as the run goes. Keeping the work within a window
keeps memory accesses within a few hundred kilobytes: sorting a query of
millions as a whole scatters every gather over all of it, and measured
several times slower than completing the samples.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

# Samples prepared together: 512 KiB of ids, 128 KiB of indices.
WINDOW = 1 << 16
# Windows are sorted when some worker takes chunks smaller than this: at 1,024 and more, a chunk
# sorted inside its worker batches within 1% of a sorted query (in batches of 8, on the SQuAD part).
SORT_BELOW = 1024


# struct codes of the index dtypes and of the ids (packed with '=': native order, standard sizes 2, 4, 8).
_CODES = {np.uint16: "H", np.uint32: "I", np.uint64: "Q"}


def ints_to_array(values: list[int], dtype: type) -> np.ndarray:
    """A list of Python ints as a numpy array of ``dtype`` (uint16, uint32 or uint64).

    ``struct.pack`` converts a list of ints 2-3x faster than ``np.fromiter``,
    ``np.array`` or ``array.array`` do (13 against 27-48 ns per int for a
    window of 65,536 sample indices, measured on this project's 2-vCPU AVX2
    machine): on the driver's one thread that is a few percent of the
    ceiling. A value out of the dtype's range raises ``struct.error``.
    """
    return np.frombuffer(struct.pack(f"={len(values)}{_CODES[dtype]}", *values), dtype=dtype)


def index_dtype(qsl_size: int) -> type:
    """The smallest unsigned dtype for sample indices below ``qsl_size`` (2 bytes for any SQuAD QSL)."""
    return np.uint16 if qsl_size <= 1 << 16 else np.uint32


def compact_indices(sample_indices: Sequence[int], qsl_size: int | None = None) -> np.ndarray:
    """Sample indices as an array of ``index_dtype`` (kept as it is when already compact)."""
    if isinstance(sample_indices, list) and qsl_size:
        return ints_to_array(sample_indices, index_dtype(qsl_size))
    idx = np.asarray(sample_indices)
    if idx.dtype in (np.uint16, np.uint32) and not qsl_size:
        return idx
    top = int(qsl_size if qsl_size else (idx.max() + 1 if idx.size else 0))
    return idx.astype(index_dtype(top), copy=False)


class QueryStore:
    """Loadgen's query, prepared window by window (see the module docstring).

    Hand-out positions run from 0 to ``len(store)``; within a sorted window
    they follow the window's longest-first order, elsewhere loadgen's order.

    Args:
        query_ids: loadgen's id of every issued sample (a list is kept as it
            is: plain windows hand out slices of it).
        sample_indices: the QSL index of every issued sample (same order).
        lengths: real length of every QSL sample, indexed by sample index.
        qsl_size: number of QSL samples (for the indices' dtype).
    """

    def __init__(
        self, query_ids: Sequence[int], sample_indices: Sequence[int], lengths: np.ndarray, qsl_size: int | None = None
    ) -> None:
        if len(query_ids) != len(sample_indices):
            raise ValueError("query_ids and sample_indices differ in length")
        self._ids = query_ids if isinstance(query_ids, list) else np.asarray(query_ids, dtype=np.uint64).tolist()
        self._source_idx = sample_indices
        top = qsl_size or (int(np.max(sample_indices)) + 1 if len(sample_indices) else 1)
        self._dtype = index_dtype(top)
        # Lengths are at most 384: 2-byte keys, so that numpy's stable sort is a radix sort.
        self._key = -np.asarray(lengths).astype(np.int16)
        self._window: tuple[int, int, list[int] | None, np.ndarray] | None = None
        self.sorted_windows = 0
        self.plain_windows = 0

    def __len__(self) -> int:
        return len(self._ids)

    def _open(self, number: int, sort: bool) -> tuple[int, int, list[int] | None, np.ndarray]:
        """Prepare window ``number``: (start, end, its ids in sorted order or None if plain, its indices)."""
        if self._window is not None and self._window[0] == number * WINDOW:
            return self._window
        start = number * WINDOW
        end = min(len(self), start + WINDOW)
        part = self._source_idx[start:end]
        if isinstance(part, list):
            idx = ints_to_array(part, self._dtype)
        else:
            idx = np.asarray(part).astype(self._dtype, copy=False)
        if sort:
            order = np.argsort(self._key[idx], kind="stable")
            ids = ints_to_array(self._ids[start:end], np.uint64)[order].tolist()
            self._window = (start, end, ids, idx[order])
            self.sorted_windows += 1
        else:
            self._window = (start, end, None, idx)
            self.plain_windows += 1
        return self._window

    def cut(self, first: int, stop: int, *, sort: bool) -> tuple[list[int], np.ndarray]:
        """The ids (ints) and sample indices at hand-out positions ``first`` to ``stop``.

        Args:
            first, stop: hand-out positions, in increasing order from one call to the next.
            sort: whether a window opened by this cut is sorted.
        """
        id_parts: list[list[int]] = []
        idx_parts: list[np.ndarray] = []
        at = first
        while at < stop:
            start, end, ids, idx = self._open(at // WINDOW, sort)
            upto = min(stop, end)
            id_parts.append(ids[at - start : upto - start] if ids is not None else self._ids[at:upto])
            idx_parts.append(idx[at - start : upto - start])
            at = upto
        if len(id_parts) == 1:
            return id_parts[0], idx_parts[0]
        # Extending a list copies its items 7x faster than a comprehension does (a chunk often spans two windows).
        ids: list[int] = []
        for part in id_parts:
            ids += part
        return ids, np.concatenate(idx_parts)

    def rest(self, first: int) -> list[int]:
        """The ids at hand-out positions ``first`` to the end (to answer them empty when a run fails)."""
        if first >= len(self):
            return []
        window = self._window
        if window is not None and window[0] <= first < window[1]:
            start, end, ids, _ = window
            head = ids[first - start :] if ids is not None else self._ids[first:end]
            return list(head) + self._ids[end:]
        return self._ids[first:]
