"""MLflow model folders (an ``MLmodel`` file beside the artifact) served as they are.

The ``MLmodel`` file is read as data (YAML): serving needs neither MLflow nor the code the
model was trained with. What it says becomes a manifest like any ``model.toml``: the
``onnx`` flavour is an ONNX model; the ``sklearn`` flavour is a skops file (safe) or a
pickle/cloudpickle file (refused unless its folder is in ``ASYNCML_MODELS_TRUST_PICKLE_DIRS``,
as for any pickle); a model that is only ``python_function`` runs its own Python code
through MLflow and is refused unless trusted the same way. The features and their types
come from the model's signature (columns; for ONNX also one 2-D tensor or one tensor per
feature); the name from the folder. An optional ``model.toml`` beside ``MLmodel`` sets
what MLflow does not say: queue, limits, batching, outputs, description, version.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from asyncml.models.errors import ModelInvalid, ModelRefused
from asyncml.models.manifest import (
    MANIFEST,
    Batch,
    Feature,
    FeatureType,
    Manifest,
    Outputs,
    _Strict,
    checked,
    read_toml,
)

MLMODEL = "MLmodel"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# MLflow's column types and tensor dtypes, as feature types.
_COLUMN_TYPES: dict[str, FeatureType] = {
    "double": "float",
    "float": "float",
    "long": "int",
    "integer": "int",
    "boolean": "bool",
    "string": "string",
}
_TENSOR_TYPES: dict[str, FeatureType] = {
    "float16": "float",
    "float32": "float",
    "float64": "float",
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "uint8": "int",
    "bool": "bool",
    "str": "string",
    "object": "string",
}
# python_function loaders that only wrap a flavour we read ourselves.
_PLAIN_LOADERS = frozenset({"mlflow.sklearn", "mlflow.onnx"})


class Overrides(_Strict):
    """``model.toml`` beside an ``MLmodel``: what MLflow's file does not say."""

    version: str = Field(default="1", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", max_length=64)
    description: str = ""
    queue: str | None = None
    max_rows: int | None = None
    timeout_s: float | None = None
    batch: Batch | None = None
    outputs: Outputs | None = None
    features: tuple[Feature, ...] | None = None
    trusted: tuple[str, ...] = ()


def _yaml(path: Path) -> dict[str, Any]:
    import yaml  # the MLmodel format; not MLflow

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelInvalid(f"{path}: not readable YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise ModelInvalid(f"{path}: no flavors: not an MLflow MLmodel file")
    return data


def _feature_name(name: Any, path: Path) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 64:
        raise ModelInvalid(
            f"{path}: signature input {name!r} cannot be a feature name (lowercase letters, "
            "digits and _); rename the column or list [[features]] in model.toml"
        )
    return name


def _signature_features(data: dict[str, Any], path: Path, onnx: bool) -> tuple[Feature, ...]:
    signature = data.get("signature") or {}
    text = signature.get("inputs")
    if not text:
        raise ModelInvalid(
            f"{path}: the model has no signature, so its inputs are unknown; save it with "
            "a signature (infer_signature) or list [[features]] in a model.toml beside it"
        )
    try:
        inputs = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as exc:
        raise ModelInvalid(f"{path}: the signature's inputs are not JSON: {exc}") from exc
    features: list[Feature] = []
    for item in inputs:
        kind = item.get("type")
        if kind == "tensor":
            if not onnx:
                raise ModelInvalid(
                    f"{path}: a tensor-based signature is read for ONNX models only; save "
                    "the model with a column-based signature (a DataFrame example)"
                )
            spec = item.get("tensor-spec") or {}
            ftype = _TENSOR_TYPES.get(str(spec.get("dtype")))
            shape = list(spec.get("shape") or [])
            if ftype is None:
                raise ModelInvalid(f"{path}: tensor dtype {spec.get('dtype')!r} is not served")
            name = _feature_name(item.get("name") or "input", path)
            width = shape[1] if len(shape) == 2 else 1
            if len(shape) > 2 or not isinstance(width, int) or width < 1:
                raise ModelInvalid(
                    f"{path}: tensor {name!r} has shape {shape}; [-1], [-1, 1] (one feature) "
                    "or [-1, n] (n features) are served"
                )
            if width == 1:
                features.append(Feature(name=name, type=ftype))
            else:
                features.extend(Feature(name=f"{name}_{i}", type=ftype) for i in range(width))
            continue
        ftype = _COLUMN_TYPES.get(str(kind))
        if ftype is None:
            raise ModelInvalid(
                f"{path}: column {item.get('name')!r} has type {kind!r}; served: "
                f"{', '.join(sorted(_COLUMN_TYPES))}"
            )
        features.append(Feature(name=_feature_name(item.get("name"), path), type=ftype))
    if not features:
        raise ModelInvalid(f"{path}: the signature names no inputs")
    return tuple(features)


def _flavour(flavors: dict[str, Any], path: Path) -> tuple[str, str]:
    """(format, artifact file) of the flavour we serve."""
    onnx = flavors.get("onnx")
    if isinstance(onnx, dict):
        return "onnx", str(onnx.get("data") or "model.onnx")
    sklearn = flavors.get("sklearn")
    if isinstance(sklearn, dict):
        artifact = str(sklearn.get("pickled_model") or "model.pkl")
        how = sklearn.get("serialization_format") or "cloudpickle"
        if how == "skops":
            return "skops", artifact
        if how in ("pickle", "cloudpickle"):
            return "pickle", artifact
        raise ModelInvalid(f"{path}: sklearn serialization_format {how!r} is not served")
    pyfunc = flavors.get("python_function")
    if isinstance(pyfunc, dict) and pyfunc.get("loader_module") not in _PLAIN_LOADERS:
        return "pyfunc", MLMODEL
    raise ModelInvalid(
        f"{path}: flavours {sorted(flavors)}; served: onnx, sklearn, python_function (trusted)"
    )


def mlflow_manifest(folder: Path, *, name: str, version: str | None = None) -> Manifest:
    """The manifest an MLflow folder stands for; ``version`` in a numbered version folder."""
    path = folder / MLMODEL
    data = _yaml(path)
    fmt, artifact = _flavour(data["flavors"], path)
    overrides_path = folder / MANIFEST
    raw = read_toml(overrides_path) if overrides_path.is_file() else {}
    if version is not None:
        raw.setdefault("version", version)
        if str(raw["version"]) != version:
            raise ModelInvalid(
                f"{overrides_path}: version = {raw['version']!r} but the folder is version "
                f"{version}"
            )
        raw["version"] = version
    over = checked(Overrides, raw, overrides_path)
    features = over.features or _signature_features(data, path, onnx=fmt == "onnx")
    fields: dict[str, Any] = {
        "name": re.sub(r"[^a-z0-9_]", "_", name.lower()).lstrip("_0123456789") or "model",
        "version": over.version,
        "format": fmt,
        "artifact": artifact,
        "description": over.description,
        "features": features,
        "trusted": over.trusted,
    }
    for key in ("queue", "max_rows", "timeout_s", "batch", "outputs"):
        value = getattr(over, key)
        if value is not None:
            fields[key] = value
    return checked(Manifest, fields, path)


def refuse_untrusted_pyfunc(folder: Path) -> ModelRefused:
    return ModelRefused(
        f"{folder / MLMODEL}: a python_function model runs its own Python code (its "
        "python_model, loader and code paths) when loaded, like a pickle: refused unless "
        "its folder is listed in ASYNCML_MODELS_TRUST_PICKLE_DIRS"
    )
