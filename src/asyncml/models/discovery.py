"""Finding the model folders to serve, and telling apart those that cannot be served.

Every folder is checked at start-up: its manifest parsed and its artifact loaded once (then
dropped; workers load their own copy after the fork). A broken folder is reported and
skipped; it never stops the other kinds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncml.kinds import TaskKind
from asyncml.models.kinds import model_kind
from asyncml.models.loaders import ModelSpec, load_model
from asyncml.models.manifest import read_manifest
from asyncml.settings import Settings

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "example"


@dataclass(frozen=True)
class Problem:
    folder: Path
    message: str


@dataclass
class Discovery:
    """The folders that can be served, and why each of the others cannot."""

    specs: list[ModelSpec] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _trusts_pickle(folder: Path, settings: Settings) -> bool:
    here = folder.resolve()
    return any(here.is_relative_to(d.resolve()) for d in settings.models_trust_pickle_dirs)


class _Unservable(Exception):
    """A folder that cannot be served, for a reason already put in words."""


# Verdicts of artifacts already loaded in this process, by everything that could change one.
_verified: dict[tuple[Any, ...], str | None] = {}


def _verify(spec: ModelSpec) -> None:
    """Load the artifact once to prove it serves; remember the verdict for this file state."""
    try:
        stat = spec.artifact.stat()
    except OSError:
        stat = None
    key = (
        spec.key,
        None if stat is None else (stat.st_size, stat.st_mtime_ns),
        spec.manifest,
        spec.trust_pickle,
    )
    if key not in _verified:
        try:
            load_model(spec)
            _verified[key] = None
        except Exception as exc:
            _verified[key] = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    problem = _verified[key]
    if problem is not None:
        raise _Unservable(problem)


def discover(settings: Settings) -> Discovery:
    """The folder's models first, then the bundled examples whose names are still free."""
    found = Discovery()
    roots: list[tuple[Path, bool]] = []
    models_dir = settings.models_path()
    if models_dir.is_dir():
        roots.append((models_dir, False))
    elif settings.models_dir is not None:
        found.problems.append(Problem(models_dir, "ASYNCML_MODELS_DIR is not a folder"))
    if settings.models_bundled:
        roots.append((BUNDLED_DIR, True))
    taken: dict[str, Path] = {}
    for root, bundled in roots:
        try:
            folders = _subfolders(root)
        except OSError as exc:
            found.problems.append(Problem(root, f"cannot list the folder: {exc}"))
            continue
        for folder in folders:
            try:
                manifest = read_manifest(folder)
                if manifest.name in taken:
                    if bundled:
                        continue  # an example the operator replaced with a model of their own
                    raise _Unservable(
                        f"model name {manifest.name!r} is already served from "
                        f"{taken[manifest.name]}"
                    )
                spec = ModelSpec(
                    folder=folder,
                    manifest=manifest,
                    trust_pickle=_trusts_pickle(folder, settings),
                    intra_op_threads=settings.models_intra_op_threads,
                    bundled=bundled,
                )
                _verify(spec)
                model_kind(spec)  # the input model can be generated
            except Exception as exc:  # whatever breaks one folder must not stop the others
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                found.problems.append(Problem(folder, message))
                continue
            taken[manifest.name] = folder
            found.specs.append(spec)
    return found


def model_kinds(settings: Settings) -> list[TaskKind[Any, Any]]:
    """The kinds of every servable model; each folder that cannot be served is logged."""
    found = discover(settings)
    for problem in found.problems:
        log.warning("model folder %s skipped: %s", problem.folder, problem.message)
    return [model_kind(spec) for spec in found.specs]
