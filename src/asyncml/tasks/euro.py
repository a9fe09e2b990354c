"""euro.results: the numbers and lucky stars of one EuroMillions draw, read from a results page.

A draw's result never changes, so a parsed result is kept in the task store's cache for good
and a date asked again is answered without touching the source. Dates are checked at the API
(the input model's validators), so a date that cannot have a result is a 422 and is never
queued; the rules live in ``_euro_rules``, the page format in ``_euro_page``, the polite
fetching in ``_euro_source``.
"""

from __future__ import annotations

import codecs
import logging
import re
import time
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from asyncml.errors import ServiceUnavailable
from asyncml.fetch import Fetched
from asyncml.kinds import Classic, Limits, TaskContext, task_kind
from asyncml.tasks._euro_errors import EuroDrawNotFound, EuroError, EuroPageChanged
from asyncml.tasks._euro_page import parse_results_page
from asyncml.tasks._euro_rules import DrawDateError, check_draw_date, parse_draw_date
from asyncml.tasks._euro_source import SourcePolicy, fetch_page

log = logging.getLogger(__name__)

TIME_LIMIT_S = 90.0
# Fetching stops this long before the soft limit: the cache write and the outcome need time.
_MARGIN_S = 5.0
_CACHE_VERSION = "v1"
_CHARSET = re.compile(r"charset\s*=\s*\"?([\w.:-]+)", re.IGNORECASE)


def _date_error(exc: DrawDateError) -> PydanticCustomError:
    # "{reason}" rather than the message itself: pydantic formats the template.
    return PydanticCustomError(exc.code, "{reason}", {"reason": exc.message})


class EuroResultsIn(BaseModel):
    draw_date: date = Field(
        description="Date of a past draw: DD-MM-YYYY (the classic form) or YYYY-MM-DD. "
        "Draws are on Fridays from 13-02-2004, and on Tuesdays too from 10-05-2011; "
        "today's draw counts from 20:45 Paris time.",
        examples=["10-05-2024", "2024-05-10"],
    )

    @field_validator("draw_date", mode="before")
    @classmethod
    def _parse(cls, value: object) -> date:
        if isinstance(value, datetime):
            raise PydanticCustomError(
                "draw_date_format", "give the draw's date alone, without a time"
            )
        if isinstance(value, date):
            return value
        if not isinstance(value, str):
            raise PydanticCustomError(
                "draw_date_format", "expected a date string, DD-MM-YYYY or YYYY-MM-DD"
            )
        try:
            return parse_draw_date(value)
        except DrawDateError as exc:
            raise _date_error(exc) from exc

    @field_validator("draw_date")
    @classmethod
    def _is_a_past_draw(cls, value: date) -> date:
        try:
            return check_draw_date(value, now=datetime.now(UTC))
        except DrawDateError as exc:
            raise _date_error(exc) from exc


class EuroResultsOut(BaseModel):
    draw_date: date = Field(description="The draw's date, YYYY-MM-DD")
    numbers: list[int] = Field(description="The 5 numbers, in the order the page lists them")
    stars: list[int] = Field(description="The 2 lucky stars, in the order the page lists them")
    source_url: str = Field(description="The page the result was read from")
    jackpot: str | None = Field(
        default=None, description="The jackpot as the page shows it, e.g. '€17,000,000'"
    )
    draw_number: int | None = Field(default=None, description="The draw's number, if shown")
    cached: bool = Field(
        default=False, description="True when answered from the cache, without a request"
    )


def _classic_result(out: dict[str, Any]) -> list[int]:
    """What ``GET /task/{id}`` always returned: the 5 numbers then the 2 stars, flat."""
    return [*out["numbers"], *out["stars"]]


@task_kind(
    "euro.results",
    queue="euro",
    limits=Limits(timeout_s=TIME_LIMIT_S),
    classic=Classic(path="/euro/results", result=_classic_result),
)
def euro_results(inp: EuroResultsIn, ctx: TaskContext) -> EuroResultsOut:
    """The numbers and lucky stars of a past EuroMillions draw.

    Read from the results page named by ASYNCML_EURO_RESULTS_URL, at most
    ASYNCML_EURO_RATE_PER_S requests per second across workers, with retries; a result is
    cached for good, so asking for a date again never fetches the page again.
    """
    deadline = time.monotonic() + TIME_LIMIT_S - _MARGIN_S
    store = ctx.store
    if store is None:
        raise ServiceUnavailable("euro.results needs the task store: it holds the cache")
    key = f"euro.results:{_CACHE_VERSION}:{inp.draw_date.isoformat()}"
    cached = store.cache_get(key)
    if cached is not None:
        try:
            return EuroResultsOut.model_validate_json(cached).model_copy(update={"cached": True})
        except ValidationError:
            log.warning("euro.results: unreadable cache entry %s; fetching again", key)
    settings = ctx.settings
    classic_date = inp.draw_date.strftime("%d-%m-%Y")
    url = settings.euro.results_url.replace("{date}", classic_date)
    page = fetch_page(
        url,
        fetcher=ctx.fetcher,
        schedule=store,
        policy=SourcePolicy.from_settings(settings),
        deadline=deadline,
    )
    if page.final_url != url and classic_date not in page.final_url:
        # A site that sends unknown dates to its latest results must not give a wrong draw.
        raise EuroDrawNotFound(
            f"no draw result is published for {inp.draw_date}: {url} redirects to "
            f"{page.final_url}, which is not that draw's page"
        )
    draw = parse_results_page(_text(page), inp.draw_date, source=page.final_url)
    out = EuroResultsOut(
        draw_date=inp.draw_date,
        numbers=draw.numbers,
        stars=draw.stars,
        source_url=page.final_url,
        jackpot=draw.jackpot,
        draw_number=draw.draw_number,
    )
    store.cache_set(key, out.model_dump_json(exclude={"cached"}))
    return out


def _text(page: Fetched) -> str:
    """The body decoded with the charset the server declared, else UTF-8."""
    match = _CHARSET.search(page.headers.get("content-type", ""))
    encoding = "utf-8"
    if match is not None:
        try:
            encoding = codecs.lookup(match.group(1)).name
        except LookupError:
            pass
    return page.content.decode(encoding, errors="replace")


# The kind's errors are raised by its parser and source too, and exported from here with it.
__all__ = [
    "TIME_LIMIT_S",
    "EuroDrawNotFound",
    "EuroError",
    "EuroPageChanged",
    "EuroResultsIn",
    "EuroResultsOut",
    "euro_results",
]
