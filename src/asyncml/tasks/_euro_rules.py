"""EuroMillions calendar rules: which dates had a draw, and what a valid draw looks like.

Pure functions of their arguments (``now`` included), so tests pin the clock by passing it.

* First draw: Friday 13 February 2004. Fridays only until Tuesday 10 May 2011, the first
  Tuesday draw; Tuesdays and Fridays since.
* Draws take place at 20:45 Paris time. A date counts once its draw time has passed in
  Europe/Paris: today is refused before 20:45 Paris time and accepted from 20:45 on,
  whatever the server's own time zone.
* Five numbers from 1 to 50; two lucky stars from 1 to 9 before 10 May 2011, 1 to 11 from
  then until 24 September 2016, 1 to 12 since.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
DRAW_TIME = time(20, 45)
FIRST_DRAW = date(2004, 2, 13)
TUESDAYS_FROM = date(2011, 5, 10)
ELEVEN_STARS_FROM = date(2011, 5, 10)
TWELVE_STARS_FROM = date(2016, 9, 24)
NUMBERS = 5
STARS = 2
NUMBER_MAX = 50

_CLASSIC = re.compile(r"(\d{2})-(\d{2})-(\d{4})")
_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TUESDAY, _FRIDAY = 1, 4


class DrawDateError(ValueError):
    """Why a date cannot name a draw; ``code`` is a stable name for the rule it breaks."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_draw_date(text: str) -> date:
    """``DD-MM-YYYY`` (the classic form) or ISO ``YYYY-MM-DD``; nothing looser."""
    value = text.strip()
    if m := _CLASSIC.fullmatch(value):
        day, month, year = (int(g) for g in m.groups())
    elif m := _ISO.fullmatch(value):
        year, month, day = (int(g) for g in m.groups())
    else:
        raise DrawDateError(
            "draw_date_format", f"{text!r} is not a date: write it DD-MM-YYYY or YYYY-MM-DD"
        )
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise DrawDateError("draw_date_impossible", f"{text!r} is not a real date: {exc}") from exc


def draw_time(day: date) -> datetime:
    """When the draw of ``day`` takes place (or would), as an aware datetime."""
    return datetime.combine(day, DRAW_TIME, tzinfo=PARIS)


def check_draw_date(day: date, *, now: datetime) -> date:
    """``day`` if a draw took place on it by ``now`` (an aware datetime); else DrawDateError."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    shown = f"{day.isoformat()} ({day:%A})"
    if day < FIRST_DRAW:
        raise DrawDateError(
            "draw_date_before_first_draw",
            f"{shown} is before the first EuroMillions draw, on Friday 13 February 2004",
        )
    today_paris = now.astimezone(PARIS).date()
    if day > today_paris:
        raise DrawDateError(
            "draw_date_in_future", f"{shown} is in the future (today is {today_paris} in Paris)"
        )
    if day < TUESDAYS_FROM and day.weekday() != _FRIDAY:
        raise DrawDateError(
            "draw_date_not_a_draw_day",
            f"{shown} is not a draw day: until 10 May 2011 draws were on Fridays only",
        )
    if day >= TUESDAYS_FROM and day.weekday() not in (_TUESDAY, _FRIDAY):
        raise DrawDateError(
            "draw_date_not_a_draw_day",
            f"{shown} is not a draw day: draws are on Tuesdays and Fridays",
        )
    if now < draw_time(day):
        raise DrawDateError(
            "draw_date_not_drawn_yet",
            f"{shown} is today's draw, which takes place at 20:45 Paris time: ask again after it",
        )
    return day


def star_max(day: date) -> int:
    """The highest lucky star in play on ``day``."""
    if day < ELEVEN_STARS_FROM:
        return 9
    if day < TWELVE_STARS_FROM:
        return 11
    return 12
