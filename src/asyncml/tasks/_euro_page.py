"""Reading one draw from a results page, and refusing pages that do not look like one.

The markup read (class order and extra classes never matter):

* numbers: ``li`` elements with class ``ball`` inside the first ``#ballsDrawn`` element, in
  document order (the order they were drawn in);
* lucky stars: ``li`` elements with class ``lucky-star`` inside the same element, in
  document order; an ``li`` with both classes is a star;
* jackpot (optional): the text of the first ``#jackpot`` or ``.jackpot`` element, whitespace
  collapsed and a leading label such as ``"Jackpot:"`` dropped, as the page shows it, e.g.
  ``"€17,000,000"``; absent unless it holds a digit and is short;
* draw number (optional): the first number in the text of the first ``#drawNumber`` or
  ``.draw-number`` element, thousands separators allowed, e.g. ``"Draw No. 1,712"`` → 1712.

Everything parsed is checked against the rules of that draw's era; a page that breaks them
raises EuroPageChanged, so a redesign of the site shows up as a failure, not a wrong answer.
The optional fields never fail a parse: missing or odd, they are simply left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from selectolax.lexbor import LexborHTMLParser, LexborNode

from asyncml.tasks._euro_errors import EuroPageChanged
from asyncml.tasks._euro_rules import NUMBER_MAX, NUMBERS, STARS, star_max

_BALL_TEXT = re.compile(r"\d{1,2}")
_DRAW_NUMBER = re.compile(r"\d{1,3}(?:[,.\u00a0\u202f ]\d{3})+|\d+")
_LABEL = re.compile(r"^[^\d:]*:\s*")  # "Estimated jackpot: €17m" -> "€17m"
_JACKPOT_MAX_CHARS = 80
_DRAW_NUMBER_MAX = 1_000_000


@dataclass(frozen=True)
class ParsedDraw:
    numbers: list[int]
    stars: list[int]
    jackpot: str | None = None
    draw_number: int | None = None


def parse_results_page(html: str, day: date, *, source: str) -> ParsedDraw:
    """The draw of ``day`` read from ``html``; EuroPageChanged if it is not there or invalid.

    ``source`` names the page in error messages.
    """
    tree = LexborHTMLParser(html)
    drawn = tree.css_first("#ballsDrawn")
    if drawn is None:
        raise _changed(source, "it has no #ballsDrawn element")
    numbers: list[int] = []
    stars: list[int] = []
    for item in drawn.css("li"):
        classes = (item.attributes.get("class") or "").split()
        if "lucky-star" in classes:
            stars.append(_ball_value(item, "lucky star", source))
        elif "ball" in classes:
            numbers.append(_ball_value(item, "number", source))
    _check(numbers, NUMBERS, NUMBER_MAX, "numbers (li.ball)", source)
    _check(stars, STARS, star_max(day), f"lucky stars (li.lucky-star) on {day}", source)
    return ParsedDraw(
        numbers=numbers,
        stars=stars,
        jackpot=_jackpot(tree),
        draw_number=_draw_number(tree),
    )


def _changed(source: str, detail: str) -> EuroPageChanged:
    return EuroPageChanged(
        f"the results page {source} has changed: {detail}; no result is given rather than "
        "a wrong one"
    )


def _ball_value(item: LexborNode, what: str, source: str) -> int:
    text = item.text(deep=True, strip=True)
    if not _BALL_TEXT.fullmatch(text):
        raise _changed(source, f"a {what} in #ballsDrawn reads {text[:20]!r}, not a number")
    return int(text)


def _check(values: list[int], count: int, top: int, what: str, source: str) -> None:
    if len(values) != count:
        raise _changed(source, f"found {len(values)} {what} in #ballsDrawn, expected {count}")
    out_of_range = [v for v in values if not 1 <= v <= top]
    if out_of_range:
        raise _changed(source, f"{what} {out_of_range} outside 1-{top}")
    if len(set(values)) != count:
        raise _changed(source, f"{what} {values} repeat a value")


def _jackpot(tree: LexborHTMLParser) -> str | None:
    node = tree.css_first("#jackpot, .jackpot")
    if node is None:
        return None
    text = " ".join(node.text(deep=True, separator=" ", strip=True).split())
    text = _LABEL.sub("", text)
    if not text or len(text) > _JACKPOT_MAX_CHARS or not any(c.isdigit() for c in text):
        return None
    return text


def _draw_number(tree: LexborHTMLParser) -> int | None:
    node = tree.css_first("#drawNumber, .draw-number")
    if node is None:
        return None
    match = _DRAW_NUMBER.search(node.text(deep=True, separator=" ", strip=True))
    if match is None:
        return None
    value = int(re.sub(r"\D", "", match.group()))
    return value if 0 < value < _DRAW_NUMBER_MAX else None
