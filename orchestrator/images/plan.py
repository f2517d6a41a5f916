"""The build plan of a profile's image: pure data, no Docker.

The tag is content-addressed: a hash of the Dockerfile, the requirement
files, the wheel set (file names and sha256), the orch version and a digest
of orch's own source, plus the platform and base image. An unchanged profile
therefore keeps its tag and is not rebuilt; any change gives a new tag.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orchestrator
from orchestrator.errors import InputError
from orchestrator.fileio import sha256_file, sha256_text
from orchestrator.images.profiles import (
    DEFAULT_PLATFORM,
    LOADGEN_VERSION,
    PYTHON_MINOR,
    RAY_VERSION,
    backend_package,
    get_profile,
    profile_dir,
    read_pins,
    wheel_arch,
)

DEFAULT_BASE_IMAGE = "orch/base:bookworm-py311"
# Bump when the meaning of the hashed inputs changes, so old tags read as stale.
PLAN_FORMAT = 1
LABEL_PREFIX = "org.orch."


@dataclass(frozen=True)
class BuildPlan:
    """Everything needed to build one profile's image.

    Attributes:
        profile: profile name.
        platform: Docker platform (``linux/amd64`` ...).
        base_image: the image the Dockerfile starts from (``BASE_IMAGE``).
        content_hash: sha256 hex of the hashed inputs.
        tag: ``orch/<profile>:<orch version>-<first 12 hex of content_hash>``.
        profile_files: files copied from ``images/<profile>/`` into the context.
        wheels: wheel file names copied into ``wheels/`` of the context.
        orch_wheel: file name of orch's own wheel, put into ``orch/`` of the context.
        buildargs: Docker build arguments.
        labels: image labels (``org.orch.*``).
    """

    profile: str
    platform: str
    base_image: str
    content_hash: str
    tag: str
    profile_files: tuple[str, ...]
    wheels: tuple[str, ...]
    orch_wheel: str
    buildargs: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def repository(self) -> str:
        """The tag's repository part (``orch/<profile>``)."""
        return self.tag.rsplit(":", 1)[0]


def source_digest(package_dir: Path | None = None) -> str:
    """sha256 over orch's own package files (paths and bytes), ignoring caches.

    It goes into the tag so that an image is rebuilt when orch's code changes
    even if its version number did not.
    """
    root = Path(package_dir) if package_dir is not None else Path(orchestrator.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(sha256_file(path)))
    return digest.hexdigest()


def orch_wheel_name(version: str) -> str:
    """The file name ``pip wheel`` gives orch's wheel for a version."""
    return f"orch-{version}-py3-none-any.whl"


def build_plan(
    profile: str,
    *,
    wheels: Mapping[str, str],
    platform: str = DEFAULT_PLATFORM,
    base_image: str = DEFAULT_BASE_IMAGE,
    orch_version: str | None = None,
    orch_source: str | None = None,
    images_root: Path | None = None,
) -> BuildPlan:
    """Plan the build of one profile's image.

    Args:
        profile: profile name.
        wheels: the wheelhouse, file name -> sha256.
        platform: Docker platform to build for.
        base_image: image to start from.
        orch_version: orch's version (default: the running one).
        orch_source: digest of orch's source (default: ``source_digest()``).
        images_root: the folder of profile folders (default: ``images/`` of the checkout).

    Returns:
        The plan; the same inputs always give the same plan.

    Raises:
        InputError: unknown profile or platform, empty wheel set, or a profile
            whose pins disagree with the shared Python/Ray/loadgen versions.
    """
    info = get_profile(profile)
    wheel_arch(platform)
    if not wheels:
        raise InputError(f"the wheelhouse of profile {profile} ({platform}) is empty", hint="run: orch images build")
    folder = profile_dir(profile, images_root)
    version = orch_version or orchestrator.__version__
    pins = read_pins(folder / "requirements.txt")
    _check_shared_pins(profile, folder, pins)
    files = ("Dockerfile", "requirements.txt", "requirements-nodeps.txt")
    inputs = {
        "format": PLAN_FORMAT,
        "profile": profile,
        "platform": platform,
        "base_image": base_image,
        "files": {name: sha256_file(folder / name) for name in files},
        "wheels": dict(sorted(wheels.items())),
        "orch_version": version,
        "orch_source": orch_source or source_digest(),
    }
    content_hash = sha256_text(json.dumps(inputs, sort_keys=True))
    package = backend_package(info)
    backend_version = pins.get(package, "")
    labels = {
        "profile": profile,
        "version": version,
        "python": PYTHON_MINOR,
        "ray": pins["ray"],
        "loadgen": pins["mlcommons-loadgen"],
        "backend": info.backend,
        "backend-package": package,
        "backend-version": backend_version,
        "accelerator": info.accelerator,
        "platform": platform,
        "base-image": base_image,
        "content-hash": content_hash,
    }
    return BuildPlan(
        profile=profile,
        platform=platform,
        base_image=base_image,
        content_hash=content_hash,
        tag=f"{info.repository}:{version}-{content_hash[:12]}",
        profile_files=files,
        wheels=tuple(sorted(wheels)),
        orch_wheel=orch_wheel_name(version),
        buildargs={"BASE_IMAGE": base_image, "PYTHON_MINOR": PYTHON_MINOR, "RAY_VERSION": pins["ray"]},
        labels={LABEL_PREFIX + key: value for key, value in labels.items()},
    )


def expected_image(
    profile: str,
    *,
    platform: str = DEFAULT_PLATFORM,
    base_image: str = DEFAULT_BASE_IMAGE,
    cache_dir: Path | None = None,
) -> str:
    """The tag ``orch images build`` gives (or gave) ``profile`` with the current checkout.

    Deploy uses it to find the image to ship. It needs the profile's
    wheelhouse in the cache (made by ``orch images build``), not Docker.

    Raises:
        InputError: unknown profile/platform, or no wheelhouse yet.
    """
    from orchestrator.images.wheelhouse import load_wheelhouse

    house = load_wheelhouse(profile, platform, cache_dir=cache_dir)
    if house is None:
        raise InputError(
            f"no image built yet for profile {profile} ({platform}) with this orch",
            hint=f"run: orch images build --profile {profile} --platform {platform}",
        )
    return build_plan(profile, wheels=house.wheels, platform=platform, base_image=base_image).tag


def image_tag(profile: str, **kwargs) -> str:
    """Alias of ``expected_image`` (same arguments)."""
    return expected_image(profile, **kwargs)


def _check_shared_pins(profile: str, folder: Path, pins: Mapping[str, str]) -> None:
    shared = {"ray": RAY_VERSION, "mlcommons-loadgen": LOADGEN_VERSION}
    for package, wanted in shared.items():
        got = pins.get(package)
        if got != wanted:
            raise InputError(
                f"{folder / 'requirements.txt'} pins {package}=={got} but every orch image needs {package}=={wanted}",
                hint=f"fix requirements.in, then run: orch images lock --profile {profile}",
            )
