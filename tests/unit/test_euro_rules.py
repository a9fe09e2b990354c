"""The EuroMillions calendar: which dates name a draw, with the clock pinned by ``now``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from asyncml.tasks._euro_rules import (
    DrawDateError,
    check_draw_date,
    parse_draw_date,
    star_max,
)

# A Saturday long after every rule change: every past draw has happened by then.
LATER = datetime(2025, 6, 14, 12, 0, tzinfo=UTC)


def refusal(day: date, now: datetime = LATER) -> DrawDateError:
    with pytest.raises(DrawDateError) as info:
        check_draw_date(day, now=now)
    return info.value


# --- parsing ---------------------------------------------------------------------------


def test_classic_form_is_day_month_year() -> None:
    assert parse_draw_date("10-05-2024") == date(2024, 5, 10)


def test_iso_form_is_year_month_day() -> None:
    assert parse_draw_date("2024-05-10") == date(2024, 5, 10)


def test_surrounding_spaces_are_ignored() -> None:
    assert parse_draw_date(" 10-05-2024 ") == date(2024, 5, 10)


@pytest.mark.parametrize(
    "text", ["10/05/2024", "2024-5-10", "10-05-24", "tomorrow", "", "2024-05-10T20:45"]
)
def test_other_forms_are_not_dates(text: str) -> None:
    with pytest.raises(DrawDateError, match="not a date: write it DD-MM-YYYY or YYYY-MM-DD"):
        parse_draw_date(text)


@pytest.mark.parametrize("text", ["31-02-2024", "2024-02-30", "29-02-2023", "00-01-2024"])
def test_impossible_dates_are_refused_with_the_reason(text: str) -> None:
    with pytest.raises(DrawDateError, match="not a real date") as info:
        parse_draw_date(text)
    assert info.value.code == "draw_date_impossible"


def test_leap_day_parses_in_a_leap_year() -> None:
    assert parse_draw_date("29-02-2008") == date(2008, 2, 29)


# --- the first draw --------------------------------------------------------------------


def test_first_draw_friday_13_february_2004_is_accepted() -> None:
    assert check_draw_date(date(2004, 2, 13), now=LATER) == date(2004, 2, 13)


def test_friday_before_the_first_draw_is_refused() -> None:
    error = refusal(date(2004, 2, 6))
    assert error.code == "draw_date_before_first_draw"
    assert "first EuroMillions draw" in error.message


def test_day_before_the_first_draw_is_refused_as_before_it() -> None:
    assert refusal(date(2004, 2, 12)).code == "draw_date_before_first_draw"


# --- draw days and their eras ----------------------------------------------------------


def test_tuesday_before_10_may_2011_is_not_a_draw_day() -> None:
    error = refusal(date(2011, 5, 3))
    assert error.code == "draw_date_not_a_draw_day"
    assert "Fridays only" in error.message


def test_last_friday_only_draw_6_may_2011_is_accepted() -> None:
    assert check_draw_date(date(2011, 5, 6), now=LATER)


def test_first_tuesday_draw_10_may_2011_is_accepted() -> None:
    assert check_draw_date(date(2011, 5, 10), now=LATER)


def test_tuesdays_and_fridays_are_draw_days_since_10_may_2011() -> None:
    assert check_draw_date(date(2024, 5, 7), now=LATER)  # Tuesday
    assert check_draw_date(date(2024, 5, 10), now=LATER)  # Friday


def test_wednesday_is_not_a_draw_day() -> None:
    error = refusal(date(2024, 5, 8))
    assert error.code == "draw_date_not_a_draw_day"
    assert error.message == (
        "2024-05-08 (Wednesday) is not a draw day: draws are on Tuesdays and Fridays"
    )


def test_leap_day_on_a_friday_is_a_draw() -> None:
    assert check_draw_date(date(2008, 2, 29), now=LATER)


def test_leap_day_on_a_thursday_is_not_a_draw_day() -> None:
    assert refusal(date(2024, 2, 29)).code == "draw_date_not_a_draw_day"


# --- the future and today --------------------------------------------------------------


def test_a_draw_day_after_today_is_in_the_future() -> None:
    error = refusal(date(2025, 6, 17), now=LATER)  # the next Tuesday
    assert error.code == "draw_date_in_future"
    assert "in the future" in error.message


def test_today_before_20_45_paris_summer_time_is_not_drawn_yet() -> None:
    now = datetime(2024, 5, 10, 18, 44, 59, tzinfo=UTC)  # 20:44:59 CEST
    error = refusal(date(2024, 5, 10), now=now)
    assert error.code == "draw_date_not_drawn_yet"
    assert "20:45 Paris time" in error.message


def test_today_from_20_45_paris_summer_time_is_accepted() -> None:
    now = datetime(2024, 5, 10, 18, 45, tzinfo=UTC)  # 20:45 CEST
    assert check_draw_date(date(2024, 5, 10), now=now)


def test_today_before_20_45_paris_winter_time_is_not_drawn_yet() -> None:
    now = datetime(2024, 1, 5, 19, 44, tzinfo=UTC)  # 20:44 CET
    assert refusal(date(2024, 1, 5), now=now).code == "draw_date_not_drawn_yet"


def test_today_from_20_45_paris_winter_time_is_accepted() -> None:
    now = datetime(2024, 1, 5, 19, 45, tzinfo=UTC)  # 20:45 CET
    assert check_draw_date(date(2024, 1, 5), now=now)


def test_today_is_the_paris_date_not_the_utc_date() -> None:
    # 22:30 UTC on Thursday is already Friday 00:30 in Paris: Friday is today, not future.
    now = datetime(2024, 5, 9, 22, 30, tzinfo=UTC)
    assert refusal(date(2024, 5, 10), now=now).code == "draw_date_not_drawn_yet"


def test_now_in_any_time_zone_means_the_same_instant() -> None:
    new_york = timezone(timedelta(hours=-4))
    now = datetime(2024, 5, 10, 14, 45, tzinfo=new_york)  # 20:45 in Paris
    assert check_draw_date(date(2024, 5, 10), now=now)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_draw_date(date(2024, 5, 10), now=datetime(2024, 5, 11))


# --- lucky stars by era ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "top"),
    [
        (date(2004, 2, 13), 9),
        (date(2011, 5, 6), 9),
        (date(2011, 5, 10), 11),
        (date(2016, 9, 23), 11),
        (date(2016, 9, 24), 12),
        (date(2016, 9, 27), 12),
    ],
)
def test_star_range_follows_the_era_of_the_draw(day: date, top: int) -> None:
    assert star_max(day) == top
