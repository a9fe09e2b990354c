"""Optional dependencies, asked for by the name of their extra when a path needs one.

The default install serves every built-in kind on both engines; the heavy paths are extras
of ``async-ml-inference`` (``pyproject.toml``): ``decode`` (librosa: the last-resort audio
decoder), ``sklearn`` (scikit-learn, skops: scikit-learn models) and ``flower``. A path that
needs a missing one says which and how to get it, never an ImportError traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from asyncml.errors import AsyncmlError, ExtraMissing

DISTRIBUTION = "async-ml-inference"


def extra_hint(extra: str, needed_for: str) -> str:
    """``<what> needs the [x] extra, which is not installed: pip install '...[x]'``."""
    return (
        f"{needed_for} needs the [{extra}] extra, which is not installed here: "
        f"pip install '{DISTRIBUTION}[{extra}]' (or uv sync --extra {extra})"
    )


def has_extra_module(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    return importlib.util.find_spec(module.split(".")[0]) is not None


def import_extra(
    module: str,
    extra: str,
    needed_for: str,
    error: type[AsyncmlError] = ExtraMissing,
) -> ModuleType:
    """Import ``module`` of ``extra``; ``error`` naming the extra when it is not installed.

    Only a missing ``module`` (or its top package) means a missing extra: another missing
    module is a broken install, and its ImportError goes up as it is.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise
        raise error(extra_hint(extra, needed_for)) from exc
