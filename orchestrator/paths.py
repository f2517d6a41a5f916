"""Where orch keeps its caches and per-system state."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The root of orch's cache: ``$ORCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/orch``, else ``~/.cache/orch``."""
    env = os.environ.get("ORCH_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "orch").resolve()


def cache_subdir(name: str) -> Path:
    """A named folder under the cache root, created on demand."""
    path = cache_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
