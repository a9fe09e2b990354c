"""Model serving: each folder of ``ASYNCML_MODELS_DIR`` (and each bundled example) becomes a
``model.<name>`` task kind. See docs/models.md."""

from asyncml.models.batcher import Batcher
from asyncml.models.discovery import (
    BUNDLED_DIR,
    Discovery,
    discover,
    live_model,
    model_kinds,
    read_model,
)
from asyncml.models.errors import (
    ModelError,
    ModelInvalid,
    ModelRefused,
    ModelUnavailable,
    ModelVersionUnknown,
    TensorInvalid,
)
from asyncml.models.kinds import (
    Predict,
    PredictionOut,
    enable_batching,
    live_models,
    model_kind,
    model_queues,
    preload,
    preload_in_worker_processes,
    served_specs,
)
from asyncml.models.loaders import CACHE, ModelSpec, Prediction, load_model
from asyncml.models.manifest import Feature, Manifest, read_manifest
from asyncml.models.versions import RELOAD_STAMP, LiveModel, Problem, ServedModel, pick

__all__ = [
    "BUNDLED_DIR",
    "CACHE",
    "RELOAD_STAMP",
    "Batcher",
    "Discovery",
    "Feature",
    "LiveModel",
    "Manifest",
    "ModelError",
    "ModelInvalid",
    "ModelRefused",
    "ModelSpec",
    "ModelUnavailable",
    "ModelVersionUnknown",
    "Predict",
    "Prediction",
    "PredictionOut",
    "Problem",
    "ServedModel",
    "TensorInvalid",
    "discover",
    "enable_batching",
    "live_model",
    "live_models",
    "load_model",
    "model_kind",
    "model_kinds",
    "model_queues",
    "pick",
    "preload",
    "preload_in_worker_processes",
    "read_manifest",
    "read_model",
    "served_specs",
]
