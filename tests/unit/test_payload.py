"""What crosses between nodes is bytes + dtype + shape, not a numpy pickle."""

from __future__ import annotations

import pickle

import numpy as np

from orchestrator.bench.payload import decode, encode


def test_round_trip_keeps_dtype_shape_and_values():
    for array in (
        np.random.default_rng(0).standard_normal((5, 384, 2)).astype(np.float32),
        np.arange(10, dtype=np.int16).reshape(5, 2),
        np.asfortranarray(np.ones((3, 4), dtype=np.float64)),
    ):
        back = decode(pickle.loads(pickle.dumps(encode(array))))
        assert back.dtype == array.dtype and back.shape == array.shape
        assert np.array_equal(back, array)


def test_encoded_pickle_names_no_numpy_module():
    blob = pickle.dumps(encode(np.zeros((2, 384, 2), np.float32)), protocol=5)
    assert b"numpy" not in blob
    assert b"numpy" in pickle.dumps(np.zeros(3), protocol=5)  # what a plain array pickle would carry
