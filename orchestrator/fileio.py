"""The one sha256 of a file and the one atomic write, for every module of orch.

A file that another process (or a later run) reads is written beside its
final path under a temporary name and renamed into place, so a reader sees
the old file or the whole new one, never a half-written one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

_BLOCK = 1 << 20


def sha256_file(path: Path | str, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (read in 1 MiB blocks).

    Args:
        path: the file.
        algorithm: a ``hashlib`` name; ``sha256`` unless a published checksum
            uses another (the MLPerf ONNX models publish md5).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """The hex sha256 of a string's UTF-8 bytes (cache keys, names)."""
    return hashlib.sha256(text.encode()).hexdigest()


def atomic_write(path: Path | str, data: bytes | str | Callable[[BinaryIO], None], *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename).

    Args:
        path: the final path; its folder must exist.
        data: bytes, text (written as UTF-8), or a function that writes into
            the open binary file (for large or streamed content).
        mode: permission bits of the new file (``mkstemp`` makes 0600; caches
            and run directories may be shared by the users of one node).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: the folder is missing or not writable; nothing is left behind.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cached_sha256(path: Path | str) -> str:
    """``sha256_file``, remembered per (absolute path, size, mtime) in orch's cache.

    For large files hashed again and again (a 1.3 GB model on every run, every
    deploy): an unchanged file is not read twice. A changed file has another
    size or mtime, so it is hashed again.
    """
    import fcntl
    import json

    from orchestrator.paths import cache_subdir

    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = cache_subdir("sha256") / "memo.json"
    lock = memo.with_suffix(".lock")

    def read() -> dict:
        try:
            return json.loads(memo.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    known = read()
    if key in known:
        return known[key]
    value = sha256_file(path)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        known = read()
        known[key] = value
        atomic_write(memo, json.dumps(known))
    return value
