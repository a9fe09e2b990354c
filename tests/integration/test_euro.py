"""euro.results end to end: real API, RabbitMQ, Redis and a worker on queue ``euro``.

The source is the session's ``euro_pages`` server (ASYNCML_EURO_RESULTS_URL points at it).
The Redis cache lives as long as the session, so every test uses draw dates of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from .fixture_server import FixtureServer
from .http_api import wait_final


def publish(
    pages: FixtureServer, classic_date: str, numbers: Sequence[int], stars: Sequence[int]
) -> str:
    """Write the draw's page the way the source shows it; returns its path on the server."""
    drawn = "".join(f'<li class="resultBall ball">{n}</li>' for n in numbers) + "".join(
        f'<li class="lucky-star resultBall">{s}</li>' for s in stars
    )
    ascending = "".join(f'<li class="ball">{n}</li>' for n in sorted(numbers))
    html = (
        "<html><body><nav><li class='ball'>99</li></nav>"
        f'<div id="ballsAscending"><ul>{ascending}</ul></div>'
        f'<div class="draw" id="ballsDrawn"><ul>{drawn}</ul></div>'
        '<div class="jackpot">Jackpot: <strong>€43,000,000</strong></div>'
        '<p class="draw-number">Draw No. 1,734</p></body></html>'
    )
    name = f"results/{classic_date}"
    (pages.root / name).write_text(html, encoding="utf-8")
    return name


def submit_classic(api: httpx.Client, classic_date: str) -> str:
    created = api.post("/euro/results", json={"draw_date": classic_date, "callback": False})
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"id"}
    task_id: str = created.json()["id"]
    return task_id


def test_classic_client_gets_201_then_200_with_the_seven_numbers_flat(
    api: httpx.Client, euro_pages: FixtureServer
) -> None:
    publish(euro_pages, "14-05-2024", [5, 48, 19, 33, 2], [7, 12])
    task_id = submit_classic(api, "14-05-2024")
    wait_final(api, task_id)
    response = api.get(f"/task/{task_id}")
    assert response.status_code == 200
    assert response.json() == {
        "id": task_id,
        "status": "SUCCESS",
        "error": None,
        "result": [5, 48, 19, 33, 2, 7, 12],
    }


def test_v1_result_has_the_draw_in_its_own_fields(
    api: httpx.Client, euro_pages: FixtureServer
) -> None:
    publish(euro_pages, "17-05-2024", [1, 50, 25, 3, 4], [11, 1])
    response = api.post("/v1/tasks/euro.results", json={"draw_date": "2024-05-17"})
    assert response.status_code == 202, response.text
    task = wait_final(api, response.json()["id"])
    assert task["status"] == "SUCCESS", task
    assert task["kind"] == "euro.results"
    assert task["result"] == {
        "draw_date": "2024-05-17",
        "numbers": [1, 50, 25, 3, 4],
        "stars": [11, 1],
        "source_url": euro_pages.url("results/17-05-2024"),
        "jackpot": "€43,000,000",
        "draw_number": 1734,
        "cached": False,
    }


def test_same_date_a_second_time_makes_no_request_to_the_source(
    api: httpx.Client, euro_pages: FixtureServer
) -> None:
    page = publish(euro_pages, "21-05-2024", [10, 20, 30, 40, 45], [2, 9])
    first = wait_final(api, submit_classic(api, "21-05-2024"))
    assert first["result"]["cached"] is False
    assert euro_pages.hits(page) == 1
    second = api.post("/v1/tasks/euro.results", json={"draw_date": "2024-05-21"}).json()
    again = wait_final(api, second["id"])
    assert again["status"] == "SUCCESS", again
    assert again["result"] == {**first["result"], "cached": True}
    assert euro_pages.hits(page) == 1


def test_draw_the_source_does_not_have_fails_with_a_readable_error(
    api: httpx.Client, euro_pages: FixtureServer
) -> None:
    task_id = submit_classic(api, "24-05-2024")  # no page written: the source answers 404
    task = wait_final(api, task_id)
    assert task["status"] == "FAILURE"
    assert task["error"]["type"] == "euro_draw_not_found"
    assert "HTTP 404" in task["error"]["message"]
    assert euro_pages.hits("results/24-05-2024") == 1
    classic = api.get(f"/task/{task_id}").json()
    assert classic["status"] == "FAILURE"
    assert "no draw result is published" in classic["error"]


def test_wednesday_is_refused_with_422_saying_why(api: httpx.Client) -> None:
    response = api.post("/euro/results", json={"draw_date": "15-05-2024", "callback": False})
    assert response.status_code == 422
    assert response.json()["message"] == (
        "draw_date: 2024-05-15 (Wednesday) is not a draw day: draws are on Tuesdays and Fridays"
    )


def test_future_date_is_refused_with_422_saying_why(api: httpx.Client) -> None:
    response = api.post("/v1/tasks/euro.results", json={"draw_date": "2098-01-02"})
    assert response.status_code == 422
    assert "is in the future" in response.json()["message"]


def test_impossible_date_is_refused_with_422_saying_why(api: httpx.Client) -> None:
    response = api.post("/euro/results", json={"draw_date": "31-02-2024", "callback": False})
    assert response.status_code == 422
    assert response.json()["message"] == (
        "draw_date: '31-02-2024' is not a real date: day is out of range for month"
    )
