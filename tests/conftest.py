"""Test tiers by folder: tests/unit, tests/integration, tests/e2e.

Each test gets the marker of its folder, so ``pytest -m unit`` and friends
select a tier; ``pytest`` runs them all. Every test runs with its own orch
cache unless it asks for the shared one (``shared_cache`` fixture), so no
test depends on what an earlier one left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "squad-v1.1-dev-part.json"


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture
def squad_part() -> Path:
    """The 4,961-question SQuAD dev part beside the project; skips when absent."""
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent (real SQuAD data lives beside the project, not in it)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _ctrl_c_works():
    """SIGINT raises KeyboardInterrupt here and in every child, however the suite was started.

    A suite started with ``&`` from a non-interactive shell (``nohup bash .ci/run &``) has
    SIGINT ignored, which Python keeps and every child inherits: the Ctrl-C tests would then
    test nothing but that. A terminal's Ctrl-C never meets an ignored SIGINT.
    """
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def _orch_cache(tmp_path_factory):
    """One orch cache for the whole test session (the demo model is built once), never the user's."""
    import os

    path = tmp_path_factory.mktemp("orch-cache")
    old = os.environ.get("ORCH_CACHE_DIR")
    os.environ["ORCH_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ORCH_CACHE_DIR", None)
    else:
        os.environ["ORCH_CACHE_DIR"] = old
