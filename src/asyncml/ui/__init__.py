"""The dashboard at ``/ui``: server-rendered pages (Jinja2) over the task store, with
vendored htmx and uPlot for the live parts. ``create_ui`` builds it as an app mounted in
the API's (``ASYNCML_UI=false``: not mounted)."""

from __future__ import annotations

from asyncml.ui.app import create_ui

__all__ = ["create_ui"]
