"""Embedded task store on SQLite: no server, survives restarts, shared by API and workers.

``schema`` holds the tables and the row codec, ``sync`` the store itself, ``aio`` the
API's side of it (threads, and a watcher instead of notifications).
"""

from __future__ import annotations

from asyncml.store.sqlite.aio import AsyncSqliteTaskStore
from asyncml.store.sqlite.sync import SqliteTaskStore

__all__ = ["AsyncSqliteTaskStore", "SqliteTaskStore"]
