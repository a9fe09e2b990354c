"""Errors of model serving, in the one ``AsyncmlError`` tree (found by ``error_class_for``)::

AsyncmlError
└── ModelError            500  a model folder cannot be served
    ├── ModelInvalid      500  its manifest or artifact is broken or does not match
    ├── ModelRefused      500  loading it could run code we were not told to trust
    ├── ModelUnavailable  503  this worker could not load a model it serves
    └── ModelVersionUnknown 404  the model has no such version (or it was removed)
TensorInvalid             400  a /v2 request's tensors do not fit the model
"""

from __future__ import annotations

from asyncml.errors import AsyncmlError


class ModelError(AsyncmlError):
    """A model folder cannot be served."""

    type = "model_error"
    status_code = 500


class ModelInvalid(ModelError):
    """The manifest or the artifact is broken, or they do not match each other."""

    type = "model_invalid"


class ModelRefused(ModelError):
    """Loading the artifact could run code nobody said to trust (pickle, untrusted types)."""

    type = "model_refused"


class ModelUnavailable(ModelError):
    """The worker could not load a model it serves; the task did not run."""

    type = "model_unavailable"
    status_code = 503


class ModelVersionUnknown(ModelError):
    """The model has no version by that name (never had, or it was removed)."""

    type = "model_version_unknown"
    status_code = 404


class TensorInvalid(AsyncmlError):
    """An Open Inference Protocol request whose tensors do not fit the model (a 400 there)."""

    type = "tensor_invalid"
    status_code = 400
