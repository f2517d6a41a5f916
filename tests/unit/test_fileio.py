"""The one sha256 helper and the one atomic write."""

from __future__ import annotations

import hashlib
import os

import pytest

from orchestrator.fileio import atomic_write, sha256_file, sha256_text


def test_sha256_file_matches_hashlib_across_blocks(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path, "md5") == hashlib.md5(data).hexdigest()
    assert sha256_text("abc") == hashlib.sha256(b"abc").hexdigest()


def test_atomic_write_text_bytes_and_writer(tmp_path):
    path = tmp_path / "f.json"
    atomic_write(path, "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    atomic_write(path, lambda f: f.write(b"streamed"))
    assert path.read_bytes() == b"streamed"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
