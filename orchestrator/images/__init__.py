"""Per-hardware Docker images, built offline from a wheelhouse.

``profiles`` (what each image holds), ``wheelhouse`` (pip download on the
host), ``plan`` (pure build plan and content-addressed tag), ``base``
(a Debian base image without a registry), ``build`` (Docker SDK builds),
``invariant`` (one Python minor and one Ray per cluster). Docker is
imported lazily, only by ``base`` and ``build`` when they talk to an engine.
"""
