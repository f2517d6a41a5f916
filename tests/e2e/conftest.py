"""What the e2e tier needs: root, the sandbox's tools, a Docker engine, the CPU image.

The image is built here when missing (content-addressed: an unchanged tree
reuses it), so the tier does not depend on the integration tier having run.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cpu_image() -> str:
    """The tag of the current ``cpu-onnxruntime`` image, built (with its base) if needed."""
    from orchestrator.errors import OrchError
    from orchestrator.sandbox import lifecycle

    reason = lifecycle.unavailable_reason()
    if reason is not None:
        pytest.skip(f"sandbox unavailable: {reason}")
    try:
        from orchestrator.images.base import build_base
        from orchestrator.images.build import build_image, docker_client
        from orchestrator.images.plan import DEFAULT_BASE_IMAGE

        client = docker_client()
    except OrchError as exc:
        pytest.skip(f"no Docker engine reachable: {exc}")
    base = build_base(DEFAULT_BASE_IMAGE, client=client)
    return build_image("cpu-onnxruntime", base_image=base.tag, client=client).plan.tag


@pytest.fixture(scope="session")
def deepsparse_image(cpu_image) -> str:
    """The tag of the current ``cpu-deepsparse`` image, built (on the same base) if needed.

    Depends on ``cpu_image`` so the skip reasons and the base build come from one place.
    """
    from orchestrator.images.base import build_base
    from orchestrator.images.build import build_image, docker_client
    from orchestrator.images.plan import DEFAULT_BASE_IMAGE

    client = docker_client()
    base = build_base(DEFAULT_BASE_IMAGE, client=client)
    return build_image("cpu-deepsparse", base_image=base.tag, client=client).plan.tag
