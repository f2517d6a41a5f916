"""Inference backends: one interface (``base.Backend``) and one registry."""

from orchestrator.backends.base import Backend, available_backends, get_backend

__all__ = ["Backend", "available_backends", "get_backend"]
