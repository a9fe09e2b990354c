from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from asyncml.api import create_app
from asyncml.settings import Settings
from asyncml.store.sqlite import SqliteTaskStore

from .euro_pages import EuroSource


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded default in a private folder: a real SQLite broker and store, no worker."""
    return Settings(data_dir=tmp_path / "data", _env_file=None)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def store(settings: Settings) -> Iterator[SqliteTaskStore]:
    """The same store the app writes, as a worker would see it."""
    sync_store = SqliteTaskStore(settings.store_path(), ttl_s=settings.result_ttl_s)
    yield sync_store
    sync_store.close()


@pytest.fixture
def queued_messages(settings: Settings) -> Callable[[], int]:
    """Messages waiting in the embedded broker, counted straight from its SQLite file."""

    def count() -> int:
        path = settings.data_dir / "broker.sqlite3"
        if not path.exists():
            return 0
        conn = sqlite3.connect(path)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM kombu_message").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()

    return count


@pytest.fixture
def source() -> Iterator[EuroSource]:
    """A EuroMillions results site on loopback, scripted by the test."""
    with EuroSource().running() as src:
        yield src
