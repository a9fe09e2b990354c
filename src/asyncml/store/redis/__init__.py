"""Production task store on Redis: one hash per task, Lua compare-and-set, pub/sub on finish.

``scripts`` holds the Lua and the key names, ``codec`` how values are encoded,
``connection`` the client options and the one ``translated()`` that turns a Redis failure
into a 503; ``sync`` is the workers' and CLI's store, ``aio`` the API's.
"""

from __future__ import annotations

from asyncml.store.redis.aio import AsyncRedisTaskStore
from asyncml.store.redis.sync import RedisTaskStore

__all__ = ["AsyncRedisTaskStore", "RedisTaskStore"]
