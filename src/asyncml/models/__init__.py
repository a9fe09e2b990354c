"""Model serving: each folder of ``ASYNCML_MODELS_DIR`` (and each bundled example) becomes a
``model.<name>`` task kind. See README "Models"."""

from asyncml.models.batcher import Batcher
from asyncml.models.discovery import BUNDLED_DIR, Discovery, Problem, discover, model_kinds
from asyncml.models.errors import ModelError, ModelInvalid, ModelRefused, ModelUnavailable
from asyncml.models.kinds import (
    Predict,
    PredictionOut,
    enable_batching,
    model_kind,
    model_queues,
    preload,
    preload_in_worker_processes,
    served_specs,
)
from asyncml.models.loaders import CACHE, ModelSpec, Prediction, load_model
from asyncml.models.manifest import Feature, Manifest, read_manifest

__all__ = [
    "BUNDLED_DIR",
    "CACHE",
    "Batcher",
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
    "enable_batching",
    "load_model",
    "model_kind",
    "model_kinds",
    "model_queues",
    "preload",
    "preload_in_worker_processes",
    "read_manifest",
    "served_specs",
]
