"""HTTP API: the versioned /v1 routes, the classic routes, health probes."""

from asyncml.api.app import create_app

__all__ = ["create_app"]
