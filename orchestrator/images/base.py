"""A Debian bookworm + Python 3.11 base image made without a registry.

``debootstrap --variant=minbase`` into a temporary folder with the Debian
mirror the host's apt uses, Python 3.11 and venv from Debian, then
``docker import``. For offline sites and CI where ``FROM python:3.11`` cannot
be pulled; elsewhere users may pass their own ``--base-image``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from orchestrator.errors import BuildError, InputError
from orchestrator.images.plan import DEFAULT_BASE_IMAGE, LABEL_PREFIX
from orchestrator.images.profiles import PYTHON_MINOR

SUITE = "bookworm"  # Debian 12: its python3 is 3.11, the Python every orch image shares
PACKAGES = ("python3", "python3-venv", "ca-certificates")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


@dataclass(frozen=True)
class BaseResult:
    """What ``build_base`` did.

    Attributes:
        tag: the image reference.
        built: False when the tag already existed and was kept.
        seconds: time taken.
        size_bytes: image size reported by Docker.
        mirror: the Debian mirror used ('' when not built).
    """

    tag: str
    built: bool
    seconds: float
    size_bytes: int
    mirror: str


def debian_mirror(sources: tuple[Path, ...] = APT_SOURCES, suite: str = SUITE) -> str:
    """The first Debian mirror the host's apt lists for ``suite`` (one-line or deb822 format).

    Raises:
        InputError: none found.
    """
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix in (".list", ".sources"))
        elif source.is_file():
            files.append(source)
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, v in (line.split(":", 1) for line in stanza.splitlines() if ":" in line and not line.startswith("#"))
                )
                if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 3 and parts[0] == "deb" and parts[2] == suite:
                    return parts[1]
    raise InputError(
        f"no Debian {suite} mirror found in /etc/apt/sources.list(.d)", hint="give one with --mirror URL"
    )


def build_base(
    tag: str = DEFAULT_BASE_IMAGE,
    *,
    mirror: str | None = None,
    force: bool = False,
    client=None,
    log: Callable[[str], None] | None = None,
) -> BaseResult:
    """Build the base image with debootstrap and ``docker import`` it as ``tag``.

    Args:
        tag: image reference to create.
        mirror: Debian mirror URL (default: the host's, see ``debian_mirror``).
        force: rebuild even when ``tag`` exists.
        client: a ``docker.DockerClient`` (default: ``build.docker_client()``).
        log: called with progress lines.

    Raises:
        InputError: not root, debootstrap missing, no mirror, no Docker engine.
        BuildError: debootstrap failed (its log tail attached).
    """
    from orchestrator.images.build import docker_client, image_size

    client = client or docker_client()
    if not force:
        size = image_size(client, tag)
        if size is not None:
            return BaseResult(tag, built=False, seconds=0.0, size_bytes=size, mirror="")
    if os.geteuid() != 0:
        raise InputError("orch images base needs root (debootstrap makes a root file system)", hint="run it as root, or give --base-image")
    if shutil.which("debootstrap") is None:
        raise InputError("debootstrap is not installed", hint="run: apt-get install -y debootstrap")
    mirror = mirror or debian_mirror()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="orch-base-") as tmp:
        root = Path(tmp) / "rootfs"
        command = [
            "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror,
        ]
        if log:
            log(" ".join(command))
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            last = tail.splitlines()[-1] if tail else f"exit code {proc.returncode}"
            raise BuildError(f"debootstrap of the base image failed: {last}", build_log=tail, hint=f"check the mirror {mirror}")
        _check_python(root)
        # Package lists and caches are dead weight in every image built on top.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
            (root / junk).mkdir(parents=True, exist_ok=True)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        if log:
            log(f"docker import {archive.stat().st_size / 1e6:.0f} MB as {tag}")
        repository, _, version = tag.rpartition(":")
        client.api.import_image_from_file(
            str(archive),
            repository=repository or tag,
            tag=version if repository else "latest",
            changes=[
                "ENV LANG=C.UTF-8",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"LABEL {LABEL_PREFIX}python={PYTHON_MINOR} {LABEL_PREFIX}base-mirror={mirror}",
                'CMD ["/bin/bash"]',
            ],
        )
    return BaseResult(tag, built=True, seconds=time.monotonic() - started, size_bytes=image_size(client, tag) or 0, mirror=mirror)


def _check_python(root: Path) -> None:
    version_file = root / "usr" / "bin" / f"python{PYTHON_MINOR}"
    if not version_file.exists():
        found = sorted(p.name for p in (root / "usr" / "bin").glob("python3.*"))
        raise BuildError(f"the {SUITE} root file system has {found or 'no python3'}, not python{PYTHON_MINOR}")
