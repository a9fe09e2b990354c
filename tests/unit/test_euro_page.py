"""Reading a draw from a results page, and refusing a page that does not hold a valid one."""

from __future__ import annotations

from datetime import date

import pytest

from asyncml.tasks._euro_page import ParsedDraw, parse_results_page
from asyncml.tasks.euro import EuroPageChanged

from .euro_pages import results_page

DAY = date(2024, 5, 10)  # 12 stars in play
SOURCE = "http://127.0.0.1/results/10-05-2024"


def parse(html: str, day: date = DAY) -> ParsedDraw:
    return parse_results_page(html, day, source=SOURCE)


def changed(html: str, day: date = DAY) -> str:
    with pytest.raises(EuroPageChanged) as info:
        parse(html, day)
    return info.value.message


def test_numbers_and_stars_come_in_drawn_order_whatever_the_classes() -> None:
    draw = parse(results_page((12, 3, 44, 27, 9), (11, 2)))
    assert draw.numbers == [12, 3, 44, 27, 9]
    assert draw.stars == [11, 2]


def test_balls_outside_balls_drawn_are_ignored() -> None:
    # The page also has a nav with li.ball / li.lucky-star and an ascending-order block.
    draw = parse(results_page((50, 1, 2, 3, 4), (1, 12)))
    assert draw.numbers == [50, 1, 2, 3, 4]
    assert draw.stars == [1, 12]


def test_class_order_and_extra_classes_do_not_matter() -> None:
    html = (
        '<div id="ballsDrawn"><ul>'
        '<li class="big ball red">1</li><li class="ball">2</li><li class=" ball  x">3</li>'
        '<li class="x ball y">4</li><li class="ball">5</li>'
        '<li class="star lucky-star">6</li><li class="lucky-star ball">7</li>'
        "</ul></div>"
    )
    draw = parse(html)
    assert draw.numbers == [1, 2, 3, 4, 5]
    assert draw.stars == [6, 7]


def test_li_with_both_classes_counts_as_a_star() -> None:
    html = (
        '<div id="ballsDrawn">'
        + "".join(f'<li class="ball">{n}</li>' for n in (1, 2, 3, 4, 5))
        + '<li class="ball lucky-star">3</li><li class="lucky-star ball">8</li></div>'
    )
    assert parse(html).stars == [3, 8]


def test_jackpot_and_draw_number_are_read_when_present() -> None:
    draw = parse(results_page(jackpot="€130,000,000", draw_number="Draw No. 1,734"))
    assert draw.jackpot == "€130,000,000"
    assert draw.draw_number == 1734


def test_jackpot_and_draw_number_by_id_are_read_too() -> None:
    html = results_page(jackpot=None, draw_number=None).replace(
        "<footer>", '<div id="jackpot">  £17 \n million </div><span id="drawNumber">1712</span>'
    )
    draw = parse(html)
    assert draw.jackpot == "£17 million"
    assert draw.draw_number == 1712


def test_missing_jackpot_and_draw_number_do_not_fail_the_parse() -> None:
    draw = parse(results_page(jackpot=None, draw_number=None))
    assert draw.jackpot is None
    assert draw.draw_number is None
    assert len(draw.numbers) == 5


def test_odd_jackpot_and_draw_number_are_left_out() -> None:
    draw = parse(results_page(jackpot="to be announced", draw_number="coming soon"))
    assert draw.jackpot is None
    assert draw.draw_number is None


def test_page_without_balls_drawn_is_a_changed_page() -> None:
    message = changed(results_page(balls_drawn=False))
    assert "no #ballsDrawn element" in message
    assert SOURCE in message


def test_six_numbers_are_a_changed_page() -> None:
    assert "found 6 numbers" in changed(results_page((1, 2, 3, 4, 5, 6), (1, 2)))


def test_four_numbers_are_a_changed_page() -> None:
    assert "found 4 numbers" in changed(results_page((1, 2, 3, 4), (1, 2)))


def test_number_above_50_is_a_changed_page() -> None:
    assert "outside 1-50" in changed(results_page((1, 2, 3, 4, 51), (1, 2)))


def test_number_zero_is_a_changed_page() -> None:
    assert "outside 1-50" in changed(results_page((0, 2, 3, 4, 5), (1, 2)))


def test_repeated_number_is_a_changed_page() -> None:
    assert "repeat" in changed(results_page((7, 2, 3, 7, 5), (1, 2)))


def test_repeated_star_is_a_changed_page() -> None:
    assert "repeat" in changed(results_page((1, 2, 3, 4, 5), (4, 4)))


def test_three_stars_are_a_changed_page() -> None:
    assert "found 3 lucky stars" in changed(results_page((1, 2, 3, 4, 5), (1, 2, 3)))


def test_text_that_is_not_a_number_is_a_changed_page() -> None:
    assert "not a number" in changed(results_page((1, 2, "three", 4, 5), (1, 2)))


def test_star_10_is_out_of_range_before_10_may_2011() -> None:
    assert "outside 1-9" in changed(results_page((1, 2, 3, 4, 5), (1, 10)), date(2011, 5, 6))


def test_star_11_is_in_range_from_10_may_2011() -> None:
    assert parse(results_page((1, 2, 3, 4, 5), (11, 1)), date(2011, 5, 10)).stars == [11, 1]


def test_star_12_is_out_of_range_before_24_september_2016() -> None:
    assert "outside 1-11" in changed(results_page((1, 2, 3, 4, 5), (12, 1)), date(2016, 9, 23))


def test_star_12_is_in_range_since_24_september_2016() -> None:
    assert parse(results_page((1, 2, 3, 4, 5), (12, 1)), date(2016, 9, 27)).stars == [12, 1]
