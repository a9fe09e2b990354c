"""Loading model artifacts safely, and one cache of loaded models per process.

ONNX is data, run by onnxruntime: safe to load from anywhere. A scikit-learn model is
loaded with skops, which rebuilds only types it trusts (its defaults plus those the
manifest lists) and refuses the rest by name. Plain pickle and joblib files are refused
unless their folder is trusted in the settings: unpickling runs whatever code the file
holds, so loading one is running a program.

Sessions are never shared across ``fork``: the cache remembers the process that filled
it, and a child (a Celery prefork worker process) starts afresh; an onnxruntime session
made in the parent may hold threads and locks that do not survive a fork.

Over 350 lines: one loader per artifact format and the process cache they share.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from asyncml.extras import import_extra
from asyncml.models.errors import ModelInvalid, ModelRefused
from asyncml.models.manifest import Manifest

log = logging.getLogger(__name__)

# onnxruntime's tensor types and the numpy types we feed them.
_ONNX_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class ModelSpec:
    """A model folder ready to load: its manifest, its artifact, and what may be trusted."""

    folder: Path
    manifest: Manifest
    trust_pickle: bool = False
    intra_op_threads: int = 1
    bundled: bool = False

    @property
    def artifact(self) -> Path:
        return self.folder / self.manifest.artifact_name

    @property
    def key(self) -> tuple[str, str]:
        return (str(self.artifact.resolve()), self.manifest.version)


# The Open Inference Protocol's datatype of each onnxruntime tensor type.
_ONNX_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
_NUMPY_V2 = {"f": "FP64", "i": "INT64", "u": "INT64", "b": "BOOL", "U": "BYTES", "O": "BYTES"}


@dataclass(frozen=True)
class Prediction:
    predictions: list[Any]
    probabilities: list[list[float]] | None


@dataclass(frozen=True)
class OutputTypes:
    """The Open Inference Protocol datatypes of a model's two outputs (None: no
    probabilities), read from the loaded model so metadata and answers agree."""

    predictions: str = "BYTES"
    probabilities: str | None = None


class Predictor(Protocol):
    def predict(self, rows: Sequence[Sequence[Any]]) -> Prediction: ...

    def output_types(self) -> OutputTypes: ...


def _listed(values: Any) -> list[Any]:
    """Numpy output as JSON-ready lists; a single-column output becomes one value a row."""
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    listed: list[Any] = array.tolist()
    return listed


class OnnxModel:
    """An onnxruntime session fed either one [rows, features] tensor or one input per
    feature (what skl2onnx makes for mixed-type pipelines)."""

    def __init__(self, spec: ModelSpec) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = spec.intra_op_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: warnings about the graph go to logs
        try:
            self.session = ort.InferenceSession(
                str(spec.artifact), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelInvalid(f"{spec.artifact}: onnxruntime cannot load it: {exc}") from exc
        self.manifest = spec.manifest
        self._inputs = self._map_inputs(spec)
        self._outputs = self._pick_outputs(spec)

    def _map_inputs(self, spec: ModelSpec) -> list[tuple[str, Any, list[int] | None]]:
        """(input name, numpy type, feature columns or None for all) per model input."""
        inputs = self.session.get_inputs()
        features = [f.name for f in spec.manifest.features]
        unknown = [i.type for i in inputs if i.type not in _ONNX_DTYPES]
        if unknown:
            raise ModelInvalid(f"{spec.artifact}: unsupported input types {unknown}")
        if len(inputs) == 1 and spec.manifest.numeric:
            shape = inputs[0].shape
            width = shape[1] if len(shape) == 2 else None
            if len(shape) != 2 or (isinstance(width, int) and width != len(features)):
                raise ModelInvalid(
                    f"{spec.artifact}: input {inputs[0].name!r} has shape {shape}; the "
                    f"manifest has {len(features)} features, so [rows, {len(features)}] is needed"
                )
            return [(inputs[0].name, _ONNX_DTYPES[inputs[0].type], None)]
        by_name = {i.name: i for i in inputs}
        if set(by_name) != set(features):
            raise ModelInvalid(
                f"{spec.artifact}: inputs {sorted(by_name)} are neither one tensor of every "
                f"feature nor one input per feature {features}"
            )
        return [
            (name, _ONNX_DTYPES[by_name[name].type], [column])
            for column, name in enumerate(features)
        ]

    def _pick_outputs(self, spec: ModelSpec) -> tuple[str, str | None]:
        outputs = {o.name: o.type for o in self.session.get_outputs()}
        wanted = spec.manifest.outputs
        predictions = wanted.predictions or next(iter(outputs))
        if predictions not in outputs:
            raise ModelInvalid(
                f"{spec.artifact}: no output {predictions!r}; it has {sorted(outputs)}"
            )
        probabilities: str | None
        if wanted.probabilities is False:
            probabilities = None
        elif wanted.probabilities is None:
            others = [n for n in outputs if n != predictions]
            probabilities = others[0] if others else None
        else:
            probabilities = wanted.probabilities
            if probabilities not in outputs:
                raise ModelInvalid(
                    f"{spec.artifact}: no output {probabilities!r}; it has {sorted(outputs)}"
                )
        if probabilities is not None and not outputs[probabilities].startswith("tensor("):
            raise ModelInvalid(
                f"{spec.artifact}: output {probabilities!r} is {outputs[probabilities]}, not a "
                "tensor (a ZipMap?); export with options={id(clf): {'zipmap': False}}"
            )
        return predictions, probabilities

    def output_types(self) -> OutputTypes:
        types = {o.name: o.type for o in self.session.get_outputs()}
        predictions, probabilities = self._outputs
        return OutputTypes(
            predictions=_ONNX_V2.get(types[predictions], "BYTES"),
            probabilities=None if probabilities is None else _ONNX_V2.get(types[probabilities]),
        )

    def predict(self, rows: Sequence[Sequence[Any]]) -> Prediction:
        feeds: dict[str, npt.NDArray[Any]] = {}
        for name, dtype, columns in self._inputs:
            table = rows if columns is None else [[row[c] for c in columns] for row in rows]
            feeds[name] = np.array(table, dtype=dtype)
        predictions, probabilities = self._outputs
        wanted = [predictions] if probabilities is None else [predictions, probabilities]
        outputs = self.session.run(wanted, feeds)
        return Prediction(
            predictions=_listed(outputs[0]),
            probabilities=None if probabilities is None else np.asarray(outputs[1]).tolist(),
        )


class SklearnModel:
    """A fitted estimator called with a 2-D array in manifest order: float when every
    feature is numeric, object otherwise (a pipeline then picks its columns by position)."""

    def __init__(self, spec: ModelSpec, estimator: Any) -> None:
        self.estimator = estimator
        self.numeric = spec.manifest.numeric
        wanted = spec.manifest.outputs
        self.predict_method = wanted.predictions or "predict"
        if not callable(getattr(estimator, self.predict_method, None)):
            raise ModelInvalid(
                f"{spec.artifact}: {type(estimator).__name__} has no method {self.predict_method}"
            )
        self.proba_method: str | None
        if wanted.probabilities is False:
            self.proba_method = None
        elif wanted.probabilities is None:
            self.proba_method = "predict_proba" if hasattr(estimator, "predict_proba") else None
        else:
            self.proba_method = wanted.probabilities
            if not callable(getattr(estimator, self.proba_method, None)):
                raise ModelInvalid(
                    f"{spec.artifact}: {type(estimator).__name__} has no method {self.proba_method}"
                )

    def output_types(self) -> OutputTypes:
        """A classifier's predictions have its classes' type; anything else gives floats."""
        classes = getattr(self.estimator, "classes_", None)
        kind = np.asarray(classes).dtype.kind if classes is not None else "f"
        return OutputTypes(
            predictions=_NUMPY_V2.get(kind, "BYTES"),
            probabilities=None if self.proba_method is None else "FP64",
        )

    def predict(self, rows: Sequence[Sequence[Any]]) -> Prediction:
        table = np.array(rows, dtype=np.float64 if self.numeric else np.object_)
        predictions = getattr(self.estimator, self.predict_method)(table)
        probabilities = None
        if self.proba_method is not None:
            probabilities = np.asarray(getattr(self.estimator, self.proba_method)(table)).tolist()
        return Prediction(predictions=_listed(predictions), probabilities=probabilities)


def _load_skops(spec: ModelSpec) -> Any:
    sio = import_extra("skops.io", "sklearn", f"{spec.artifact} (skops)", ModelInvalid)
    import_extra("sklearn", "sklearn", f"{spec.artifact} (skops)", ModelInvalid)

    try:
        untrusted = sio.get_untrusted_types(file=spec.artifact)
    except Exception as exc:  # not a zip, no schema: skops raises several types
        raise ModelInvalid(f"{spec.artifact}: not a skops file: {exc}") from exc
    refused = sorted(set(untrusted) - set(spec.manifest.trusted))
    if refused:
        raise ModelRefused(
            f"{spec.artifact}: untrusted types {', '.join(refused)}; list them in model.toml "
            "as trusted = [...] only if you trust where this file came from"
        )
    try:
        return sio.load(spec.artifact, trusted=list(spec.manifest.trusted))
    except Exception as exc:
        raise ModelInvalid(f"{spec.artifact}: skops cannot load it: {exc}") from exc


def _load_pickle(spec: ModelSpec) -> Any:
    if not spec.trust_pickle:
        raise ModelRefused(
            f"{spec.artifact}: pickle/joblib files are refused: unpickling runs any code the "
            "file holds. Convert the model to skops or ONNX, or list its folder in "
            "ASYNCML_MODELS_TRUST_PICKLE_DIRS if you made the file yourself"
        )
    # joblib reads plain pickles too; it and what they unpickle come with scikit-learn
    import_extra("sklearn", "sklearn", f"{spec.artifact} (pickle)", ModelInvalid)
    joblib = import_extra("joblib", "sklearn", f"{spec.artifact} (pickle)", ModelInvalid)

    try:
        return joblib.load(spec.artifact)  # the folder is trusted by the settings
    except Exception as exc:
        raise ModelInvalid(f"{spec.artifact}: cannot unpickle it: {exc}") from exc


class PyfuncModel:
    """An MLflow python_function model, run by MLflow (trusted folders only): it gets a
    DataFrame with the features as columns, as its signature says."""

    def __init__(self, spec: ModelSpec) -> None:
        from asyncml.models.mlflow import refuse_untrusted_pyfunc

        if not spec.trust_pickle:
            raise refuse_untrusted_pyfunc(spec.folder)
        try:
            import mlflow.pyfunc
        except ImportError as exc:
            raise ModelInvalid(
                f"{spec.folder}: a python_function model is run by MLflow, which is not "
                "installed here (pip install mlflow-skinny)"
            ) from exc
        try:
            self.model = mlflow.pyfunc.load_model(str(spec.folder))  # trusted by settings
        except Exception as exc:
            raise ModelInvalid(f"{spec.folder}: MLflow cannot load it: {exc}") from exc
        self.columns = [f.name for f in spec.manifest.features]

    def output_types(self) -> OutputTypes:
        return OutputTypes(predictions="FP64")  # the answer says BYTES if they are strings

    def predict(self, rows: Sequence[Sequence[Any]]) -> Prediction:
        import pandas as pd

        out = self.model.predict(pd.DataFrame([list(r) for r in rows], columns=self.columns))
        return Prediction(predictions=_listed(out), probabilities=None)


def load_model(spec: ModelSpec) -> Predictor:
    """Load the artifact the manifest names; ModelInvalid or ModelRefused if it cannot be."""
    if not spec.artifact.is_file():
        raise ModelInvalid(f"{spec.artifact}: the artifact file is missing")
    if spec.manifest.format == "onnx":
        return OnnxModel(spec)
    if spec.manifest.format == "pyfunc":
        return PyfuncModel(spec)
    estimator = _load_skops(spec) if spec.manifest.format == "skops" else _load_pickle(spec)
    return SklearnModel(spec, estimator)


class ModelCache:
    """Loaded models of this process, keyed by (artifact path, version): each model is
    loaded once per worker process, never per task, and never inherited across fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._models: dict[tuple[str, str], Predictor] = {}

    def get(self, spec: ModelSpec) -> Predictor:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's sessions are not ours
                self._models = {}
                self._pid = os.getpid()
            model = self._models.get(spec.key)
            if model is None:
                began = time.perf_counter()
                model = self._models[spec.key] = load_model(spec)
                log.info(
                    "model %s %s loaded in %.3f s (process %d)",
                    spec.manifest.name,
                    spec.manifest.version,
                    time.perf_counter() - began,
                    self._pid,
                )
            return model

    def __contains__(self, spec: object) -> bool:
        return (
            isinstance(spec, ModelSpec) and self._pid == os.getpid() and (spec.key in self._models)
        )

    def clear(self) -> None:
        with self._lock:
            self._models = {}


CACHE = ModelCache()
