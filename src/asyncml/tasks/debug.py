"""debug.echo: the cheapest task there is, to measure what the platform itself costs.

Off unless ``ASYNCML_DEBUG_KINDS=true``: a production deployment has no use for it, and
every kind it serves is one more route to secure.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from asyncml.kinds import Limits, TaskContext, task_kind


class EchoIn(BaseModel):
    payload: Any = Field(default=None, description="Any JSON value; returned as it came.")


class EchoOut(BaseModel):
    payload: Any = None


@task_kind("debug.echo", queue="debug", limits=Limits(timeout_s=10, grace_s=5))
def echo(inp: EchoIn, ctx: TaskContext) -> EchoOut:
    """Return the input unchanged (benchmarks: the platform's own cost per task)."""
    return EchoOut(payload=inp.payload)


DEBUG_KINDS = [echo]
