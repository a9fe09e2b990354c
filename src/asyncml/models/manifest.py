"""``model.toml``: what a model folder serves, read and checked before anything is loaded.

The manifest is the model's contract with clients: the features it names, their types and
bounds become the kind's input schema, so a wrong request is a 422 in the API, never an
error deep inside a worker.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from asyncml.errors import describe_errors
from asyncml.models.errors import ModelInvalid

MANIFEST = "model.toml"
DEFAULT_QUEUE = "models"
DEFAULT_MAX_ROWS = 100
# Names a feature may not take: the input's own fields and the v1 route's options.
RESERVED = frozenset({"instances", "version", "inference", "callback_url", "callback_events"})
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib"})
_DEFAULT_ARTIFACT = {
    "onnx": "model.onnx",
    "skops": "model.skops",
    "pickle": "model.pkl",
    "pyfunc": "MLmodel",
}

M = TypeVar("M", bound=BaseModel)
FeatureType = Literal["float", "int", "bool", "string"]
# pyfunc: an MLflow python_function model, run by MLflow itself (its own code: trusted only)
Format = Literal["onnx", "skops", "pickle", "pyfunc"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Strict):
    """One input column. Bounds are inclusive; ``enum`` makes a string categorical."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=64)
    type: FeatureType
    min: float | None = None
    max: float | None = None
    enum: tuple[str, ...] | None = Field(default=None, min_length=1)
    max_length: int = Field(default=1000, ge=1, description="Longest string accepted.")
    description: str = ""

    @model_validator(mode="after")
    def _fits_its_type(self) -> Feature:
        if self.name in RESERVED:
            raise ValueError(f"feature name {self.name!r} is reserved")
        if (self.min is not None or self.max is not None) and self.type not in ("float", "int"):
            raise ValueError(f"feature {self.name!r}: min/max apply to float and int only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"feature {self.name!r}: min is above max")
        if self.enum is not None and self.type != "string":
            raise ValueError(f"feature {self.name!r}: enum applies to string only")
        return self


class Outputs(_Strict):
    """Where predictions and probabilities come from: an output name (ONNX) or a method
    name (scikit-learn). Unset: the first output / ``predict``, and the next float output
    / ``predict_proba`` when the model has one; ``probabilities = false``: none."""

    predictions: str | None = None
    probabilities: str | Literal[False] | None = None
    classes: tuple[str | int, ...] | None = Field(
        default=None, description="Class labels in the order of the probability columns."
    )


class Batch(_Strict):
    """Limits for grouping rows of several tasks into one call (used by the batcher)."""

    max_batch_size: int = Field(default=32, ge=1, le=10_000)
    max_wait_ms: float = Field(default=5.0, ge=0, le=10_000)


class Manifest(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    format: Format
    artifact: str | None = Field(default=None, description="File name; default by format.")
    description: str = ""
    queue: str = Field(default=DEFAULT_QUEUE, pattern=r"^[a-z][a-z0-9_-]*$")
    features: tuple[Feature, ...] = Field(min_length=1)
    outputs: Outputs = Outputs()
    batch: Batch = Batch()
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, ge=1, le=10_000)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    trusted: tuple[str, ...] = Field(
        default=(), description="skops only: types trusted beyond skops' defaults."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [f.name for f in self.features]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(f"features named twice: {', '.join(doubles)}")
        if self.trusted and self.format != "skops":
            raise ValueError("trusted applies to skops models only")
        artifact = self.artifact_name
        if Path(artifact).name != artifact or artifact.startswith("."):
            raise ValueError(f"artifact {artifact!r} must be a file name inside the folder")
        if self.format != "pickle" and Path(artifact).suffix.lower() in PICKLE_SUFFIXES:
            raise ValueError(
                f"artifact {artifact!r} is a pickle file: declare format = 'pickle' "
                "(refused unless its folder is trusted) or convert it to skops or ONNX"
            )
        return self

    @property
    def artifact_name(self) -> str:
        return self.artifact or _DEFAULT_ARTIFACT[self.format]

    @property
    def kind_name(self) -> str:
        return f"model.{self.name}"

    @property
    def numeric(self) -> bool:
        """Every feature fits one number column (bools as 0/1)."""
        return all(f.type != "string" for f in self.features)


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML at ``path``; every problem is a ModelInvalid naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelInvalid(f"{path}: no {path.name} in the folder") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelInvalid(f"{path}: not readable TOML: {exc}") from exc


def checked(model: type[M], data: Mapping[str, Any], path: Path) -> M:
    """``data`` parsed as ``model``; a mismatch is a ModelInvalid naming the file."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ModelInvalid(f"{path}: {describe_errors(exc.errors())}") from exc


def read_manifest(folder: Path, *, version: str | None = None) -> Manifest:
    """Parse ``folder/model.toml``. In a numbered version folder (``version`` given) the
    folder's number is the version: the manifest may leave it out, and may not contradict
    it (a result names the version that answered, and that is the folder clients ask for)."""
    path = folder / MANIFEST
    data = read_toml(path)
    if version is not None:
        stated = data.setdefault("version", version)
        if str(stated) != version:
            raise ModelInvalid(
                f"{path}: version = {stated!r} but the folder is version {version}; "
                "leave version out of a numbered folder's manifest"
            )
        data["version"] = version
    return checked(Manifest, data, path)


class ModelLevel(_Strict):
    """``model.toml`` beside numbered version folders: which version answers a request
    that names none. ``traffic`` splits those requests by weight (a canary); without it,
    ``default_version`` (else the highest) takes them all."""

    default_version: str | None = Field(default=None, pattern=r"^[0-9]+$")
    traffic: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _weights(self) -> ModelLevel:
        for version, weight in self.traffic.items():
            if not version.isdigit():
                raise ValueError(f"traffic: {version!r} is not a version number")
            if weight < 0:
                raise ValueError(f"traffic: version {version} has a negative weight")
        if self.traffic and sum(self.traffic.values()) <= 0:
            raise ValueError("traffic: the weights add up to 0")
        return self


def read_model_level(folder: Path) -> ModelLevel:
    """The model-level ``model.toml`` of a versioned folder; none: every default."""
    path = folder / MANIFEST
    if not path.is_file():
        return ModelLevel()
    data = read_toml(path)
    if "default_version" in data:
        data["default_version"] = str(data["default_version"])
    return checked(ModelLevel, data, path)
