"""Finding the model folders to serve, and telling apart those that cannot be served.

Every folder is checked at start-up: its manifest parsed and its artifact loaded once (then
dropped; workers load their own copy after the fork). A broken folder (or version) is
reported and skipped; it never stops the other kinds. A folder is served as it is laid
out: ``model.toml`` beside its artifact, an MLflow ``MLmodel`` beside its artifact, or
numbered version folders each holding one of those.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncml.kinds import TaskKind
from asyncml.models.inputs import input_model
from asyncml.models.kinds import model_kind
from asyncml.models.loaders import ModelSpec, OutputTypes, load_model
from asyncml.models.manifest import Feature, Manifest, read_manifest, read_model_level
from asyncml.models.mlflow import MLMODEL, mlflow_manifest
from asyncml.models.versions import (
    RELOAD_STAMP,
    WATCH_S,
    LiveModel,
    Problem,
    ServedModel,
    by_version,
    folder_signature,
)
from asyncml.settings import Settings

log = logging.getLogger(__name__)

BUNDLED_DIR = Path(__file__).parent / "example"


@dataclass
class Discovery:
    """The models that can be served, and why each of the other folders cannot."""

    models: list[ServedModel] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def specs(self) -> list[ModelSpec]:
        """The default version of each model."""
        return [m.default_spec for m in self.models if m.default_spec is not None]


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


@dataclass(frozen=True)
class _Trust:
    """What the settings say about loading: which folders may hold pickles, and threads."""

    pickle_dirs: tuple[Path, ...] = ()
    intra_op_threads: int = 1

    @classmethod
    def of(cls, settings: Settings) -> _Trust:
        return cls(
            tuple(d.resolve() for d in settings.models_trust_pickle_dirs),
            settings.models_intra_op_threads,
        )

    def pickles(self, folder: Path) -> bool:
        here = folder.resolve()
        return any(here.is_relative_to(d) for d in self.pickle_dirs)


class _Unservable(Exception):
    """A folder that cannot be served, for a reason already put in words."""


# Verdicts of artifacts already loaded in this process, by everything that could change one.
_verified: dict[tuple[Any, ...], str | OutputTypes] = {}


def _verify(spec: ModelSpec) -> OutputTypes:
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
            _verified[key] = load_model(spec).output_types()
        except Exception as exc:
            _verified[key] = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    verdict = _verified[key]
    if isinstance(verdict, str):
        raise _Unservable(verdict)
    return verdict


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def _is_version(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit()


def _manifest(folder: Path, model_folder: Path, version: str | None) -> Manifest:
    """A version's manifest: its model.toml, or what its MLmodel says (named for the
    model's folder, as MLflow models carry no name of ours)."""
    if (folder / MLMODEL).is_file():
        return mlflow_manifest(folder, name=model_folder.name, version=version)
    return read_manifest(folder, version=version)


def _spec(folder: Path, manifest: Manifest, trust: _Trust, bundled: bool) -> ModelSpec:
    return ModelSpec(
        folder=folder,
        manifest=manifest,
        trust_pickle=trust.pickles(folder),
        intra_op_threads=trust.intra_op_threads,
        bundled=bundled,
    )


def read_model(
    folder: Path,
    trust: _Trust,
    *,
    bundled: bool = False,
    features: tuple[Feature, ...] | None = None,
) -> ServedModel:
    """One model folder: a flat one (model.toml or MLmodel beside the artifact) or numbered
    version folders (``1/``, ``2/``, each one such folder) with an optional model.toml
    naming the default version and the traffic split. A version that cannot be served is
    a problem of its own; the others still serve. ``features``: what every version must
    take (the kind's input is one schema, fixed when the process started)."""
    numbered = sorted((p for p in folder.iterdir() if _is_version(p)), key=lambda p: int(p.name))
    if not numbered:
        manifest = _manifest(folder, folder, None)
        if features is not None and manifest.features != features:
            raise _Unservable("its features changed; restart to serve the new input schema")
        spec = _spec(folder, manifest, trust, bundled)
        outputs = _verify(spec)
        input_model(manifest)  # the input model can be generated
        return ServedModel(
            name=manifest.name,
            folder=folder,
            versions={manifest.version: spec},
            default=manifest.version,
            outputs={manifest.version: outputs},
            layout="mlflow" if (folder / MLMODEL).is_file() else "flat",
        )
    level = read_model_level(folder)
    specs: dict[str, ModelSpec] = {}
    outputs_of: dict[str, OutputTypes] = {}
    problems: list[Problem] = []
    for version_folder in reversed(numbered):  # the highest sets the name and features
        version = str(int(version_folder.name))
        try:
            manifest = _manifest(version_folder, folder, version)
            first = next(iter(specs.values()), None)
            name = first.manifest.name if first else manifest.name
            if manifest.name != name:
                raise _Unservable(f"it is model {manifest.name!r}, the folder serves {name!r}")
            wanted = features if features is not None else (first and first.manifest.features)
            if wanted and manifest.features != wanted:
                raise _Unservable(
                    "its features differ from the served input schema (versions of one model "
                    "take the same features; serve a new model name instead)"
                )
            spec = _spec(version_folder, manifest, trust, bundled)
            outputs_of[version] = _verify(spec)
            input_model(manifest)  # the input model can be generated
            specs[version] = spec
        except Exception as exc:  # one broken version must not stop the others
            problems.append(Problem(version_folder, _message(exc)))
    if not specs:
        reasons = "; ".join(f"{p.folder.name}: {p.message}" for p in problems)
        raise _Unservable(f"no version can be served ({reasons})")
    default = level.default_version
    if default is not None and default not in specs:
        problems.append(
            Problem(folder, f"default_version {default} is not served; the highest answers")
        )
        default = None
    specs = by_version(specs)
    served = ServedModel(
        name=next(iter(specs.values())).manifest.name,
        folder=folder,
        versions=specs,
        default=default or next(iter(specs)),
        traffic=dict(level.traffic),
        outputs=outputs_of,
        problems=tuple(problems),
        layout="versioned",
    )
    return served


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
    trust = _Trust.of(settings)
    taken: dict[str, Path] = {}
    for root, bundled in roots:
        try:
            folders = _subfolders(root)
        except OSError as exc:
            found.problems.append(Problem(root, f"cannot list the folder: {exc}"))
            continue
        for folder in folders:
            try:
                served = read_model(folder, trust, bundled=bundled)
                if served.name in taken:
                    if bundled:
                        continue  # an example the operator replaced with a model of their own
                    raise _Unservable(
                        f"model name {served.name!r} is already served from {taken[served.name]}"
                    )
            except Exception as exc:  # whatever breaks one folder must not stop the others
                found.problems.append(Problem(folder, _message(exc)))
                continue
            taken[served.name] = folder
            found.models.append(served)
            found.problems.extend(served.problems)
    return found


def live_model(served: ServedModel, settings: Settings) -> LiveModel:
    """``served`` as this process will keep it up to date (bundled examples never change)."""
    bundled = served.folder.is_relative_to(BUNDLED_DIR)
    trust = _Trust.of(settings)
    first = served.default_spec
    features = None if first is None else first.manifest.features

    def read() -> ServedModel:
        return read_model(served.folder, trust, bundled=bundled, features=features)

    return LiveModel(
        served,
        read=read,
        signature=lambda: folder_signature(served.folder),
        stamp=settings.models_path() / RELOAD_STAMP,
        watch_s=0 if bundled else WATCH_S,
    )


def model_kinds(settings: Settings) -> list[TaskKind[Any, Any]]:
    """The kinds of every servable model; each folder that cannot be served is logged."""
    found = discover(settings)
    for problem in found.problems:
        log.warning("model folder %s skipped: %s", problem.folder, problem.message)
    return [model_kind(live_model(served, settings)) for served in found.models]
