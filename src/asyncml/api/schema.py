"""What every route documents and how request bodies are checked: shared by the routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Header
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from asyncml.errors import UnsupportedMediaType
from asyncml.records import Callback, Event


class ErrorResponse(BaseModel):
    """Every error body: a stable type and a readable message (422s add ``errors``)."""

    type: str
    message: str


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# What any route may answer besides its own success; documented so clients (and the
# schema-driven fuzz test) know every status they can get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("The request is malformed (e.g. a body that is not UTF-8)."),
    401: _error("No valid API key (send Authorization: Bearer aml_...)."),
    404: _error("No such task (or route); unknown and not-yours look the same."),
    413: _error("The body is larger than ASYNCML_API_MAX_BODY_BYTES."),
    415: _error("The body is not sent as JSON."),
    429: _error("Over the key's request rate or its cap of unfinished tasks; see Retry-After."),
    503: _error("The broker or the store is unavailable, or the queue is full; see Retry-After."),
}


def strict(model: type[BaseModel]) -> type[BaseModel]:
    """The same input, refusing what it does not name (a typo is a 422, not ignored) and
    NaN or infinities. The worker parses with the kind's own model, unchanged."""
    config = ConfigDict(**{**model.model_config, "extra": "forbid", "allow_inf_nan": False})
    return type(f"Strict{model.__name__}", (model,), {"model_config": config})


class CallbackFields(BaseModel):
    """The webhook options of a submit body (single and batch): not part of the input."""

    callback_url: HttpUrl | None = Field(
        None, description="POST a signed notice here (Standard Webhooks)."
    )
    callback_events: list[Event] = Field(
        default_factory=lambda: list[Event](["completed"]),
        description="Which events to notify: completed (default), started, and progress, "
        "log, output (at most one of these a task per 500 ms, the latest; one attempt each).",
        min_length=1,
    )

    def callback(self) -> Callback | None:
        if self.callback_url is None:
            return None
        return Callback(url=str(self.callback_url), events=sorted(set(self.callback_events)))


CALLBACK_FIELDS = frozenset(CallbackFields.model_fields)


async def require_json(content_type: Annotated[str | None, Header()] = None) -> None:
    """415 for a body that says it is not JSON (or says nothing), before reading it."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json (got {media or 'none'})"
        )
