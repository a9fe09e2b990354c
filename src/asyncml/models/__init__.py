"""Model serving: each folder of ``ASYNCML_MODELS_DIR`` (and each bundled example) becomes a
``model.<name>`` task kind. See README "Models"."""

from asyncml.models.discovery import BUNDLED_DIR, Discovery, Problem, discover, model_kinds
from asyncml.models.errors import ModelError, ModelInvalid, ModelRefused, ModelUnavailable
from asyncml.models.kinds import (
    Predict,
    PredictionOut,
    model_kind,
    preload,
    preload_in_worker_processes,
    served_specs,
)
from asyncml.models.loaders import CACHE, ModelSpec, Prediction, load_model
from asyncml.models.manifest import Feature, Manifest, read_manifest

__all__ = [
    "BUNDLED_DIR",
    "CACHE",
    "Discovery",
    "Feature",
    "Manifest",
    "ModelError",
    "ModelInvalid",
    "ModelRefused",
    "ModelSpec",
    "ModelUnavailable",
    "Predict",
    "Prediction",
    "PredictionOut",
    "Problem",
    "discover",
    "load_model",
    "model_kind",
    "model_kinds",
    "preload",
    "preload_in_worker_processes",
    "read_manifest",
    "served_specs",
]
