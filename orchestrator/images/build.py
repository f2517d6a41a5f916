"""Build profile images through the Docker SDK, and report what exists.

``docker`` is imported lazily here; everything that decides *what* to build
lives in ``plan``. The build context is assembled in a temporary folder:
the profile's files, the wheelhouse under ``wheels/`` (hard links when the
file system allows) and orch's own wheel under ``orch/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.errors import BuildError, InputError
from orchestrator.images.invariant import check_same_runtime
from orchestrator.images.plan import DEFAULT_BASE_IMAGE, BuildPlan, build_plan, source_digest
from orchestrator.images.profiles import DEFAULT_PLATFORM, get_profile, profile_dir
from orchestrator.images.wheelhouse import Wheelhouse, ensure_wheelhouse, load_wheelhouse

LOG_TAIL = 40
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class BuildOutcome:
    """The result of ``build_image``.

    Attributes:
        plan: the build plan.
        built: False when the tag already existed and was kept.
        seconds: build time (0 when skipped).
        size_bytes: image size reported by Docker.
        wheelhouse: the wheelhouse used (with its own download time).
    """

    plan: BuildPlan
    built: bool
    seconds: float
    size_bytes: int
    wheelhouse: Wheelhouse


@dataclass(frozen=True)
class ImageStatus:
    """One row of ``orch images list``.

    Attributes:
        profile: profile name.
        state: ``exists`` (the current tag is built), ``stale`` (only older
            tags of the profile exist) or ``missing``.
        expected: the current tag ('' when the wheelhouse is not downloaded yet).
        size_bytes: size of the current image (0 unless it exists).
        others: other tags of the profile present in the engine.
    """

    profile: str
    state: str
    expected: str
    size_bytes: int
    others: tuple[str, ...]


def docker_client():
    """A connected ``docker.DockerClient`` from the environment (``DOCKER_HOST`` or the default socket).

    Raises:
        InputError: the SDK is missing or no engine answers.
    """
    try:
        import docker
    except ImportError as exc:
        raise InputError("the docker Python package is not installed", hint="run: pip install docker") from exc
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests errors or OSError
        raise InputError(
            f"cannot reach a Docker engine at {where} ({type(exc).__name__})",
            hint="start dockerd, or set DOCKER_HOST to a running engine",
        ) from exc
    return client


def image_size(client, ref: str) -> int | None:
    """Size in bytes of a local image, or None when it does not exist."""
    import docker

    try:
        return int(client.api.inspect_image(ref)["Size"])
    except docker.errors.ImageNotFound:
        return None


def image_labels(client, ref: str) -> dict[str, str]:
    """The labels of a local image.

    Raises:
        InputError: the image does not exist.
    """
    import docker

    try:
        return dict(client.api.inspect_image(ref)["Config"].get("Labels") or {})
    except docker.errors.ImageNotFound as exc:
        raise InputError(f"image {ref} not found in the Docker engine", hint="run: orch images build") from exc


def check_images(refs: list[str], client=None) -> tuple[str, str]:
    """Check that local images share one Python minor and Ray (for deploy).

    Returns:
        The shared (Python minor, Ray version).

    Raises:
        InputError: an image is missing, unlabelled, or the set mixes versions.
    """
    client = client or docker_client()
    return check_same_runtime({ref: image_labels(client, ref) for ref in refs})


def build_image(
    profile: str,
    *,
    platform: str = DEFAULT_PLATFORM,
    base_image: str = DEFAULT_BASE_IMAGE,
    force: bool = False,
    client=None,
    log: Callable[[str], None] | None = None,
) -> BuildOutcome:
    """Build one profile's image unless its content-addressed tag already exists.

    Args:
        profile: profile name.
        platform: Docker platform to build for.
        base_image: image the Dockerfile starts from; must exist locally
            (nothing can be pulled).
        force: build even when the tag exists.
        client: a ``docker.DockerClient`` (default: ``docker_client()``).
        log: called with each build log line.

    Raises:
        InputError: unknown profile/platform, no engine, base image missing,
            wheel unavailable for the platform.
        BuildError: the Docker build failed (``build_log`` holds its tail).
    """
    get_profile(profile)
    client = client or docker_client()
    # The wheelhouse first: a wheel missing for the platform is the most basic refusal.
    house = ensure_wheelhouse(profile, platform, log=log)
    with tempfile.TemporaryDirectory(prefix=f"orch-build-{profile}-") as tmp:
        # One snapshot of orch's source is both hashed into the tag and built
        # into the wheel, so the tag matches the content even while files change.
        source = snapshot_source(Path(tmp) / "src")
        plan = build_plan(profile, wheels=house.wheels, platform=platform, base_image=base_image,
                          orch_source=source_digest(source / "orchestrator"))
        _check_base(client, base_image, plan)
        existing = image_size(client, plan.tag)
        if existing is not None and not force:
            return BuildOutcome(plan, built=False, seconds=0.0, size_bytes=existing, wheelhouse=house)
        started = time.monotonic()
        context = Path(tmp) / "context"
        context.mkdir()
        assemble_context(plan, house.path, context, source)
        _stream_build(client, plan, context, log)
    return BuildOutcome(plan, built=True, seconds=time.monotonic() - started,
                        size_bytes=image_size(client, plan.tag) or 0, wheelhouse=house)


def snapshot_source(dest: Path) -> Path:
    """Copy what orch's wheel is built from (pyproject, README, the package) to ``dest``.

    Raises:
        InputError: not run from a checkout of orch.
    """
    if not (REPO_ROOT / "pyproject.toml").is_file():
        raise InputError(f"orch's source tree is not at {REPO_ROOT}", hint="run orch images build from a checkout of orch")
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        if (REPO_ROOT / name).exists():
            shutil.copy2(REPO_ROOT / name, dest / name)
    shutil.copytree(REPO_ROOT / "orchestrator", dest / "orchestrator", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def assemble_context(plan: BuildPlan, wheel_dir: Path, context: Path, source: Path) -> None:
    """Fill ``context`` with the profile files, the wheels and orch's wheel built from ``source``.

    Raises:
        BuildError: orch's wheel could not be built.
    """
    folder = profile_dir(plan.profile)
    for name in plan.profile_files:
        shutil.copy2(folder / name, context / name)
    (context / "wheels").mkdir()
    for name in plan.wheels:
        try:
            os.link(wheel_dir / name, context / "wheels" / name)
        except OSError:  # another file system: copy instead
            shutil.copy2(wheel_dir / name, context / "wheels" / name)
    (context / "orch").mkdir()
    build_orch_wheel(source, context / "orch", plan.orch_wheel)


def build_orch_wheel(source: Path, dest: Path, expected_name: str) -> Path:
    """``pip wheel --no-deps`` of an orch source snapshot (see ``snapshot_source``) into ``dest``.

    Building from a copy leaves nothing (build/, egg-info) in the working tree.

    Raises:
        BuildError: pip failed or produced another file name.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest), str(source)],
        capture_output=True, text=True, env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"),
    )
    wheel = dest / expected_name
    if proc.returncode != 0 or not wheel.is_file():
        tail = "\n".join(proc.stderr.splitlines()[-20:])
        raise BuildError(f"building orch's wheel failed (expected {expected_name})", build_log=tail)
    return wheel


def image_status(
    profile: str, *, platform: str = DEFAULT_PLATFORM, base_image: str = DEFAULT_BASE_IMAGE, client=None
) -> ImageStatus:
    """Whether the current image of a profile exists, is stale, or is missing."""
    client = client or docker_client()
    house = load_wheelhouse(profile, platform)
    expected = build_plan(profile, wheels=house.wheels, platform=platform, base_image=base_image).tag if house else ""
    repository = get_profile(profile).repository
    tags = sorted(t for image in client.api.images(name=repository) for t in (image.get("RepoTags") or []))
    size = image_size(client, expected) if expected in tags else None
    others = tuple(t for t in tags if t != expected)
    state = "exists" if size is not None else ("stale" if others else "missing")
    return ImageStatus(profile, state, expected, size or 0, others)


def _check_base(client, base_image: str, plan: BuildPlan) -> None:
    import docker

    try:
        info = client.api.inspect_image(base_image)
    except docker.errors.ImageNotFound as exc:
        raise InputError(
            f"base image {base_image} not found in the Docker engine (--base-image); nothing can be pulled",
            hint="run: orch images base, or docker load the image you name",
        ) from exc
    platform = f"{info.get('Os', 'linux')}/{info.get('Architecture', '')}"
    if platform != plan.platform:
        raise InputError(
            f"base image {base_image} is {platform}, not {plan.platform} (--platform)",
            hint=f"give a {plan.platform} image with --base-image",
        )
    # A base made by `orch images base` states its Python in a label; any other
    # base is checked inside the build instead (the Dockerfile refuses another minor).
    python = (info["Config"].get("Labels") or {}).get("org.orch.python")
    if python is not None and python != plan.labels["org.orch.python"]:
        raise InputError(
            f"base image {base_image} has Python {python}, orch images need Python {plan.labels['org.orch.python']} (--base-image)",
            hint="run: orch images base, or name a Python %s base" % plan.labels["org.orch.python"],
        )


def _stream_build(client, plan: BuildPlan, context: Path, log: Callable[[str], None] | None) -> None:
    tail: deque[str] = deque(maxlen=LOG_TAIL)
    kwargs = {}
    if plan.platform != _engine_platform(client):
        kwargs["platform"] = plan.platform
    stream = client.api.build(
        path=str(context), tag=plan.tag, buildargs=plan.buildargs, labels=plan.labels,
        rm=True, forcerm=True, pull=False, decode=True, **kwargs,
    )
    try:
        _follow(stream, plan, tail, log)
    except BaseException:
        # Whatever stops us following it (Ctrl-C, SIGTERM, a failed step): hang
        # up on the engine, which cancels a build still running. The tag is set
        # only when a build completes, so no half-built image carries it.
        client.api.close()
        raise


def _follow(stream, plan: BuildPlan, tail: deque[str], log: Callable[[str], None] | None) -> None:
    for chunk in stream:
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in text.splitlines():
            if line.strip():
                tail.append(line)
                if log:
                    log(line)
        if "error" in chunk:
            error = str(chunk["error"]).strip().splitlines()
            tail.extend(error)
            raise BuildError(
                f"building {plan.tag} failed: {error[-1] if error else 'unknown error'}",
                build_log="\n".join(tail),
                hint="the build log tail is above; rerun with --debug for more",
            )


def _engine_platform(client) -> str:
    info = client.api.version()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(info.get("Arch", ""), info.get("Arch", ""))
    return f"{info.get('Os', 'linux')}/{arch}"
