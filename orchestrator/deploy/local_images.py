"""The images on this machine's Docker engine that deploy ships (docker SDK, imported lazily)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from orchestrator.deploy.facts import ImageFacts
from orchestrator.errors import InputError, OrchError

SAVE_CHUNK = 4 << 20


def default_tag(profile: str) -> str:
    """orch's own tag for a profile's image: the content-addressed tag ``orch images build`` gives it.

    Raises:
        InputError: no image was built for the profile with this checkout (says what to run).
    """
    from orchestrator.images.plan import expected_image

    return expected_image(profile)


def image_tag(inventory: Any, profile: str) -> str:
    """The tag to deploy for ``profile``: the inventory's ``images`` entry, else orch's default."""
    return inventory.images.get(profile) or default_tag(profile)


class LocalImages:
    """Reads image facts and ``docker save`` streams from the local engine."""

    def __init__(self) -> None:
        self._client: Any = None

    def _docker(self) -> Any:
        if self._client is None:
            try:
                import docker
            except ImportError as exc:  # pragma: no cover - docker is a core dependency
                raise OrchError("the docker Python package is missing", hint="pip install docker") from exc
            try:
                self._client = docker.from_env()
                self._client.ping()
            except Exception as exc:
                raise OrchError(
                    f"cannot reach the local Docker engine ({exc.__class__.__name__})",
                    hint="start dockerd (deploy ships images from it) or set DOCKER_HOST",
                ) from exc
        return self._client

    def facts(self, tag: str, profile: str | None = None) -> ImageFacts:
        """Id, architecture and size of a local image.

        Raises:
            InputError: the image is not on this machine (says how to build it).
        """
        import docker

        try:
            image = self._docker().images.get(tag)
        except docker.errors.ImageNotFound:
            build = f"orch images build --profile {profile}" if profile else "build it"
            raise InputError(f"image {tag} is not on this machine's Docker engine", hint=f"run: {build}") from None
        attrs = image.attrs
        return ImageFacts(
            tag=tag,
            id=attrs["Id"],
            arch=attrs.get("Architecture", ""),
            size=int(attrs.get("Size", 0)),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
        )

    def save(self, tag: str) -> Iterator[bytes]:
        """The ``docker save`` tar of ``tag`` (tag kept, so ``docker load`` names it), in chunks."""
        image = self._docker().images.get(tag)
        return iter(image.save(chunk_size=SAVE_CHUNK, named=tag))
