"""The euro kind's settings group: ``Settings.euro``, read from ``ASYNCML_EURO_*``.

``settings.py`` makes it a field of ``Settings`` and splits ``ASYNCML_EURO_RESULTS_URL`` at its
first ``_`` after the prefix (``euro`` / ``results_url``), so the variables keep the names they
had as top-level fields. A module of its own that imports nothing of asyncml: ``settings.py``
imports it, and the kind's other modules import ``settings``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EuroSettings(BaseModel):
    """How euro.results reads the results source."""

    model_config = ConfigDict(frozen=True)

    results_url: str = Field(
        default="https://www.euro-millions.com/results/{date}",
        pattern=r"^https?://[^\s]*\{date\}[^\s]*$",
        description="Page of one EuroMillions draw; {date} becomes the date as DD-MM-YYYY.",
    )
    rate_per_s: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Most requests per second to the results source, across all workers.",
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect timeout of one request to the results source."
    )
    read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Read timeout of one request to the results source; connect plus read "
        "timeout also caps one whole request.",
    )
    max_bytes: int = Field(
        default=2_000_000, gt=0, description="Largest results page accepted, in bytes."
    )
    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Requests made for one draw before giving up."
    )
    retry_base_s: float = Field(
        default=1.0,
        ge=0,
        description="First wait before a retry; doubled at each further attempt, plus jitter.",
    )
    retry_max_s: float = Field(
        default=10.0,
        ge=0,
        description="Longest wait between two attempts; a longer Retry-After ends the task.",
    )
