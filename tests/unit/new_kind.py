"""A kind that exists only for the test of what adding a kind takes: this module, and its
line in ``asyncml.tasks._KINDS`` (added by the test)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from asyncml.kinds import Limits, TaskContext, task_kind


class ShoutIn(BaseModel):
    text: str = Field(description="What to shout.")


class ShoutOut(BaseModel):
    text: str


@task_kind("text.shout", queue="text", limits=Limits(timeout_s=5))
def shout(inp: ShoutIn, ctx: TaskContext) -> ShoutOut:
    """Upper-case the text."""
    return ShoutOut(text=inp.text.upper())
