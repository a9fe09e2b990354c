"""A model folder as a ``model.<name>`` task kind: the same declaration as every other kind.

The kind's function holds the model's spec, not the model: the model is loaded in the
worker process that runs the task (once, then cached), never in the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from asyncml.errors import TaskTimeout
from asyncml.kinds import Limits, TaskContext, TaskKind
from asyncml.models.batcher import Batcher
from asyncml.models.errors import ModelError, ModelUnavailable
from asyncml.models.inputs import InferenceOptions, input_model, rows
from asyncml.models.loaders import CACHE, ModelSpec, Predictor
from asyncml.models.oip import inference_response
from asyncml.models.versions import LiveModel

log = logging.getLogger(__name__)

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr


class PredictionOut(BaseModel):
    """What every model kind returns; ``version`` traces the result to the artifact."""

    model: str = Field(description="The model's name (the kind is model.<name>).")
    version: str = Field(description="The version of the model that made these predictions.")
    predictions: list[Scalar | list[Scalar]] = Field(description="One prediction per row.")
    probabilities: list[list[float]] | None = Field(
        default=None,
        description="Per row, one probability per class (the manifest's outputs.classes "
        "order); null when the model gives none.",
    )
    batch_size: int = Field(description="Rows predicted in the call that produced this.")
    inference: dict[str, Any] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # /v1 results stay as they were
        description="Tasks submitted through /v2: the Open Inference Protocol response.",
    )


class Predict:
    """The kind's function: rows in, predictions out, with the model of this process, in
    the version asked for or drawn (by the task's id, so a redelivery keeps its version)."""

    def __init__(self, live: LiveModel) -> None:
        self.live = live

    @property
    def spec(self) -> ModelSpec:
        """The default version's spec as this process last read it."""
        spec = self.live.current().default_spec
        if spec is None:
            raise ModelUnavailable(f"model {self.live.name} has no version that can be served")
        return spec

    def __call__(self, inp: BaseModel, ctx: TaskContext) -> PredictionOut:
        from asyncml.metrics import MODEL_BATCH_SIZE, MODEL_PREDICTIONS  # see cli/serve.py

        spec = self.live.resolve(getattr(inp, "version", None), key=ctx.task_id or None)
        model = load(spec)
        manifest = spec.manifest
        table = rows(manifest, inp)
        if _batching.enabled and manifest.batch.max_batch_size > 1:
            try:
                out, size = batcher_for(spec, model).predict(table, timeout_s=manifest.timeout_s)
            except FuturesTimeout:
                raise TaskTimeout(
                    f"{manifest.kind_name}: no prediction within {manifest.timeout_s:g} s"
                ) from None
        else:
            out, size = model.predict(table), len(table)
            MODEL_BATCH_SIZE.labels(manifest.name).observe(size)
        MODEL_PREDICTIONS.labels(manifest.name, manifest.version).inc()
        result = PredictionOut(
            model=manifest.name,
            version=manifest.version,
            predictions=out.predictions,
            probabilities=out.probabilities,
            batch_size=size,
        )
        options: InferenceOptions | None = getattr(inp, "inference", None)
        if options is not None:
            result.inference = inference_response(result, model.output_types(), options)
        return result


class _Batching:
    """Whether this process batches: only a worker with a pool of threads (set by
    ``asyncml worker``); in a prefork child one task runs at a time, and waiting for
    company would only add latency."""

    enabled = False


_batching = _Batching()


def enable_batching(enabled: bool = True) -> None:
    _batching.enabled = enabled


_BATCHERS: dict[tuple[str, str], Batcher] = {}
_BATCHERS_LOCK = threading.Lock()


def batcher_for(spec: ModelSpec, model: Predictor) -> Batcher:
    """This process's batcher of ``spec``'s model (threads do not survive a fork, and the
    pool that batches is a pool of threads: one process, one batcher per model)."""
    from asyncml.metrics import MODEL_BATCH_SIZE  # not at import: see cli/serve.py

    with _BATCHERS_LOCK:
        batcher = _BATCHERS.get(spec.key)
        if batcher is None or batcher.predictor is not model:
            observe = MODEL_BATCH_SIZE.labels(spec.manifest.name).observe
            batcher = _BATCHERS[spec.key] = Batcher(
                model,
                max_batch_size=spec.manifest.batch.max_batch_size,
                max_wait_ms=spec.manifest.batch.max_wait_ms,
                name=spec.manifest.name,
                observe=observe,
            )
        return batcher


def load(spec: ModelSpec) -> Predictor:
    """The cached model; a model that will not load here fails the task as data."""
    try:
        return CACHE.get(spec)
    except ModelError as exc:
        log.error("model %s %s cannot be loaded: %s", spec.manifest.name, spec.key, exc.message)
        raise ModelUnavailable(
            f"model {spec.manifest.name} {spec.manifest.version} cannot be loaded by this "
            f"worker: {exc.message}"
        ) from exc


def _description(spec: ModelSpec) -> str:
    manifest = spec.manifest
    features = ", ".join(f"{f.name} ({f.type})" for f in manifest.features)
    text = manifest.description or f"Predictions of the {manifest.name} model."
    classes = manifest.outputs.classes
    extra = f" Classes: {', '.join(map(str, classes))}." if classes else ""
    return (
        f"{text} Version {manifest.version} ({manifest.format}). Features: {features}; "
        f"one row as fields or up to {manifest.max_rows} in instances.{extra}"
    )


def model_kind(live: LiveModel) -> TaskKind[BaseModel, PredictionOut]:
    """Declare ``model.<name>``: input generated from the default version's manifest when
    the process started (every version takes those features), the shared output."""
    func = Predict(live)
    spec = func.spec
    return TaskKind(
        name=spec.manifest.kind_name,
        queue=spec.manifest.queue,
        input_model=input_model(spec.manifest, knows=live.knows),
        output_model=PredictionOut,
        func=func,
        limits=Limits(timeout_s=spec.manifest.timeout_s),
        description=_description(spec),
    )


def live_models(kinds: Iterable[TaskKind[Any, Any]]) -> dict[str, LiveModel]:
    """The models behind the model kinds among ``kinds``, by model name."""
    return {k.func.live.name: k.func.live for k in kinds if isinstance(k.func, Predict)}


def served_specs(kinds: Iterable[TaskKind[Any, Any]]) -> list[ModelSpec]:
    """The default versions' specs behind the model kinds among ``kinds``."""
    return [k.func.spec for k in kinds if isinstance(k.func, Predict)]


def preload(kinds: Iterable[TaskKind[Any, Any]], queues: Iterable[str]) -> None:
    """Load the models of the kinds on ``queues`` now; one that fails is logged, and its
    tasks then fail as ``model_unavailable`` rather than stopping the worker."""
    wanted = set(queues)
    for kind in kinds:
        if isinstance(kind.func, Predict) and kind.queue in wanted:
            for spec in kind.func.live.current().versions.values():
                try:
                    load(spec)
                except ModelUnavailable:
                    pass  # logged by load()


def preload_in_worker_processes(kinds: Iterable[TaskKind[Any, Any]], queues: Iterable[str]) -> None:
    """Load the models when each Celery worker process starts, after the fork."""
    from celery.signals import worker_process_init

    chosen = list(kinds)
    wanted = list(queues)

    def on_start(**_: object) -> None:
        preload(chosen, wanted)

    worker_process_init.connect(on_start, weak=False)


def model_queues(kinds: Iterable[TaskKind[Any, Any]]) -> set[str]:
    """The queues that carry only predictions (a worker of these may batch)."""
    kinds = list(kinds)
    mixed = {k.queue for k in kinds if not isinstance(k.func, Predict)}
    return {k.queue for k in kinds if isinstance(k.func, Predict)} - mixed
