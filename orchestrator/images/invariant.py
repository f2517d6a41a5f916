"""The cluster invariant: every image of one cluster has the same Python minor and Ray version.

Ray refuses (or misbehaves) when nodes differ in either, so building or
deploying a mix fails here, before any node is touched. The versions are
read from the ``org.orch.python`` and ``org.orch.ray`` labels that
``orch images build`` stamps (and checks inside the build).
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.errors import InputError
from orchestrator.images.plan import LABEL_PREFIX

PYTHON_LABEL = LABEL_PREFIX + "python"
RAY_LABEL = LABEL_PREFIX + "ray"


def runtime_of(image: str, labels: Mapping[str, str] | None) -> tuple[str, str]:
    """(Python minor, Ray version) of an image from its labels.

    Raises:
        InputError: the labels are missing (the image was not built by orch).
    """
    labels = labels or {}
    python, ray = labels.get(PYTHON_LABEL), labels.get(RAY_LABEL)
    if not python or not ray:
        raise InputError(
            f"image {image} has no {PYTHON_LABEL}/{RAY_LABEL} labels, so its Python and Ray are unknown",
            hint="use an image made by: orch images build",
        )
    return python, ray


def check_same_runtime(images: Mapping[str, Mapping[str, str] | None]) -> tuple[str, str]:
    """Check that all images share one Python minor and one Ray version.

    Args:
        images: image reference -> its labels (``docker inspect`` Config.Labels,
            or a build plan's labels).

    Returns:
        The shared (Python minor, Ray version).

    Raises:
        InputError: no images, an image without labels, or a mix; the message
            lists which image has what.
    """
    if not images:
        raise InputError("no images given to check")
    runtimes = {image: runtime_of(image, labels) for image, labels in images.items()}
    distinct = sorted(set(runtimes.values()))
    if len(distinct) > 1:
        detail = "; ".join(f"{image}: Python {py}, Ray {ray}" for image, (py, ray) in sorted(runtimes.items()))
        raise InputError(
            f"images mix Python/Ray versions ({detail}); Ray needs one Python minor and one Ray version on every node",
            hint="rebuild them all with one orch: orch images build",
        )
    return distinct[0]
