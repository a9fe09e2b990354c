"""Errors of euro.results, in the one ``AsyncmlError`` tree (found by ``error_class_for``)::

AsyncmlError
└── EuroError             502  a EuroMillions draw could not be read from its source
    ├── EuroDrawNotFound  404  the source has no page for that draw (yet)
    └── EuroPageChanged   502  the page no longer has the shape the parser reads

A module of their own, not ``euro.py``: the page parser and the source raise them and
``euro.py`` imports both, so errors kept in ``euro.py`` would make them import each other.
"""

from __future__ import annotations

from asyncml.errors import AsyncmlError


class EuroError(AsyncmlError):
    """A EuroMillions draw could not be read from the results source."""

    type = "euro_error"
    status_code = 502


class EuroDrawNotFound(EuroError):
    """The source has no page for that draw: it answered 404, or sent us elsewhere."""

    type = "euro_draw_not_found"
    status_code = 404


class EuroPageChanged(EuroError):
    """The page does not hold a valid draw where the parser looks: report it, never guess."""

    type = "euro_page_changed"
