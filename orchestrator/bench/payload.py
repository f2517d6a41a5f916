"""Arrays as plain bytes + dtype + shape, for everything that crosses between nodes.

Nodes may run different numpy majors (the deepsparse image has numpy 1.x,
the others 2.x). A pickled numpy-2 array names ``numpy._core``, which
numpy 1.x cannot unpickle; bytes, a dtype string and a shape tuple mean
the same thing under both.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def encode(array: np.ndarray) -> dict[str, Any]:
    """A numpy-version-independent form of ``array`` (only builtins inside)."""
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": tuple(int(n) for n in array.shape), "data": array.tobytes()}


def decode(payload: dict[str, Any]) -> np.ndarray:
    """The array ``encode`` was given (read-only view over the bytes)."""
    return np.frombuffer(payload["data"], dtype=np.dtype(payload["dtype"])).reshape(payload["shape"])
