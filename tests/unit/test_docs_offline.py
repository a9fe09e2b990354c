"""/docs and /redoc load every file they need from the service itself (issue 20, point 2):
FastAPI's default pages fetched Swagger UI and ReDoc from a CDN, blank without internet."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from asyncml.api import create_app
from asyncml.settings import Settings

# Every URL a page names: src/href attributes and the quoted URLs of its inline script.
_URLS = re.compile(
    r"""(?:src|href)="([^"]+)"|(?:url|oauth2RedirectUrl|spec-url)['"]?\s*[:=]\s*['"]([^'"]+)['"]"""
)


@pytest.fixture
def base_url(settings: Settings) -> Iterator[str]:
    """The app on a loopback port (it listens before the server thread starts)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def _referenced(page: str) -> list[str]:
    return [a or b for a, b in _URLS.findall(page)]


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json"}),
        ("/redoc", {"redoc.standalone.js", "openapi.json"}),
    ],
)
def test_docs_page_and_every_file_it_names_come_from_the_service(
    base_url: str, page: str, expected: set[str]
) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        html = client.get(page)
        assert html.status_code == 200
        urls = _referenced(html.text)
        assert {u.rsplit("/", 1)[-1] for u in urls} >= expected, urls
        for url in urls:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            got = client.get(url)
            assert got.status_code == 200, url
            assert got.content, url
        assert "fonts.googleapis" not in html.text


def test_the_cdn_pages_of_fastapi_are_not_served(base_url: str) -> None:
    html = httpx.get(f"{base_url}/docs", timeout=30).text
    assert "cdn.jsdelivr.net" not in html
