"""Kinds for benchmarks and tests: ``debug.echo``, the cheapest task there is (what the
platform itself costs), ``debug.audio_decode``, the naive audio length (download the whole
file, decode every sample with librosa) that ``audio.length`` is measured against, and
``debug.steps``, a task that reports its progress, logs and partial output step by step.

Off unless ``ASYNCML_DEBUG_KINDS=true``: a production deployment has no use for it, and
every kind it serves is one more route to secure.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

from pydantic import BaseModel, Field, HttpUrl

from asyncml.extras import import_extra
from asyncml.kinds import Limits, TaskContext, TaskKind, task_kind

log = logging.getLogger(__name__)


class EchoIn(BaseModel):
    payload: Any = Field(default=None, description="Any JSON value; returned as it came.")


class EchoOut(BaseModel):
    payload: Any = None


@task_kind("debug.echo", queue="debug", limits=Limits(timeout_s=10, grace_s=5))
def echo(inp: EchoIn, ctx: TaskContext) -> EchoOut:
    """Return the input unchanged (benchmarks: the platform's own cost per task)."""
    return EchoOut(payload=inp.payload)


class DecodeIn(BaseModel):
    audio_url: HttpUrl = Field(description="http(s) URL of an audio file.")


class DecodeOut(BaseModel):
    audio_length: float = Field(description="Seconds, from the number of decoded samples.")


@task_kind("debug.audio_decode", queue="debug", limits=Limits(timeout_s=120))
def audio_decode(inp: DecodeIn, ctx: TaskContext) -> DecodeOut:
    """Download the whole file and decode it with librosa: the baseline of audio.length."""
    downloaded = ctx.fetcher.download(str(inp.audio_url), ctx.scratch_dir() / "audio")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa's audioread deprecation notice
        librosa = import_extra("librosa", "decode", "debug.audio_decode")
        signal, rate = librosa.load(downloaded.path, sr=None, mono=False)
    return DecodeOut(audio_length=signal.shape[-1] / rate)


class StepsIn(BaseModel):
    steps: int = Field(ge=1, le=1000, description="How many steps to report.")
    step_s: float = Field(0.0, ge=0, le=5, description="Seconds each step takes.")


class StepsOut(BaseModel):
    steps: int


@task_kind("debug.steps", queue="debug", limits=Limits(timeout_s=600))
def steps(inp: StepsIn, ctx: TaskContext) -> StepsOut:
    """Report ``steps`` steps of ``step_s`` each: progress, a log line through ``logging``
    and a partial output per step (the events a watcher and a benchmark see)."""
    for done in range(1, inp.steps + 1):
        time.sleep(inp.step_s)  # the step's work
        ctx.progress(done, inp.steps, f"step {done}")
        log.info("finished step %d of %d", done, inp.steps)
        ctx.output({"step": done})
    return StepsOut(steps=inp.steps)


DEBUG_KINDS: list[TaskKind[Any, Any]] = [echo, audio_decode, steps]
