"""API keys: made, stored only as digests, looked up per request with a one-second memory.

A key is ``aml_`` and 32 random bytes (URL-safe base64). The store keeps its SHA-256
digest with a name and optional per-key limits; a key file (``ASYNCML_API_KEYS_FILE``)
can provision more, as digests too, so a fresh deployment needs no interactive step.

Lookups go by digest, and the digest found is compared with ``hmac.compare_digest``: the
time taken says nothing about the key. Each API process remembers a lookup for at most
``CACHE_S`` seconds, so a revoked key stops working on every process within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asyncml.errors import TaskNotFound, Unauthorized
from asyncml.records import ApiKey, TaskRecord, utcnow
from asyncml.store import AsyncTaskStore

log = logging.getLogger(__name__)

KEY_PREFIX = "aml_"
CACHE_S = 1.0
_CACHE_MAX = 10_000
_DIGEST_HEX = 64


def new_key() -> str:
    """A fresh key: shown once, stored only as its digest."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def make_key(
    name: str,
    *,
    rate: str | None = None,
    max_unfinished: int | None = None,
    operator: bool = False,
) -> tuple[str, ApiKey]:
    """A new key and the record to store for it."""
    if not name or any(c.isspace() for c in name) or len(name) > 64:
        raise ValueError("a key name is 1-64 characters without spaces")
    key = new_key()
    return key, ApiKey(
        name=name,
        digest=digest(key),
        created_at=utcnow(),
        rate=rate,
        max_unfinished=max_unfinished,
        operator=operator,
    )


def key_file_line(key: ApiKey) -> str:
    """The key's line for ``ASYNCML_API_KEYS_FILE``: name, digest, then optional limits."""
    parts = [key.name, key.digest]
    if key.rate or key.max_unfinished is not None:
        parts.append(key.rate or "-")
    if key.max_unfinished is not None:
        parts.append(str(key.max_unfinished))
    return " ".join(parts)


def parse_key_file(lines: Iterable[str], *, source: str = "keys file") -> list[ApiKey]:
    """``name sha256-hex [rate|-] [max_unfinished]`` a line; ``#`` starts a comment.

    A malformed line is an error naming its line number: a deployment must not start
    with half its keys silently missing.
    """
    keys: list[ApiKey] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source}, line {number}"
        if len(parts) < 2 or len(parts) > 4:
            raise ValueError(f"{where}: want `name sha256-hex [rate] [max_unfinished]`")
        name, hexdigest = parts[0], parts[1].lower().removeprefix("sha256:")
        if len(hexdigest) != _DIGEST_HEX or any(c not in "0123456789abcdef" for c in hexdigest):
            raise ValueError(f"{where}: the digest must be 64 hex digits (sha256 of the key)")
        rate = parts[2] if len(parts) > 2 and parts[2] != "-" else None
        if rate is not None:
            from limits import parse_many

            try:
                parse_many(rate)
            except ValueError:
                raise ValueError(f"{where}: {rate!r} is not a rate like 10/second") from None
        max_unfinished = None
        if len(parts) == 4:
            if not parts[3].isdigit():
                raise ValueError(f"{where}: max_unfinished must be a whole number")
            max_unfinished = int(parts[3])
        keys.append(
            ApiKey(
                name=name,
                digest=hexdigest,
                created_at=utcnow(),
                rate=rate,
                max_unfinished=max_unfinished,
            )
        )
    return keys


def load_key_file(path: Path) -> list[ApiKey]:
    return parse_key_file(path.read_text(encoding="utf-8").splitlines(), source=str(path))


@dataclass(frozen=True)
class Caller:
    """Who is asking: the key (None when keys are off) and the owner id of its tasks."""

    key: ApiKey | None

    @property
    def owner(self) -> str:
        return "" if self.key is None else self.key.key_id

    @property
    def name(self) -> str:
        return "anonymous" if self.key is None else self.key.name

    @property
    def operator(self) -> bool:
        """Sees every task (the dashboard's operator pages): an operator key, or anyone
        when keys are off (every task is then everyone's, on the API too)."""
        return self.key is None or self.key.operator


ANONYMOUS = Caller(key=None)


class Authenticator:
    """Turns an ``Authorization`` header into a ``Caller``, or raises ``Unauthorized``."""

    def __init__(
        self, store: AsyncTaskStore, *, required: bool, file_keys: Iterable[ApiKey] = ()
    ) -> None:
        self.store = store
        self.required = required
        self._file_keys = {k.digest: k for k in file_keys}
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def authenticate(self, authorization: str | None) -> Caller:
        if not self.required:
            return ANONYMOUS
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
            raise Unauthorized("send a valid API key: Authorization: Bearer aml_...")
        wanted = digest(token)
        key = await self._lookup(wanted)
        if key is None or not hmac.compare_digest(key.digest, wanted):
            raise Unauthorized("send a valid API key: Authorization: Bearer aml_...")
        return Caller(key=key)

    async def by_digest(self, wanted: str) -> Caller:
        """The caller of a dashboard session, which keeps the key's digest, never the key."""
        if not self.required:
            return ANONYMOUS
        key = await self._lookup(wanted)
        if key is None or not hmac.compare_digest(key.digest, wanted):
            raise Unauthorized("the session's API key is no longer valid; sign in again")
        return Caller(key=key)

    async def _lookup(self, wanted: str) -> ApiKey | None:
        if wanted in self._file_keys:
            return self._file_keys[wanted]
        now = time.monotonic()
        cached = self._cache.get(wanted)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        key = await self.store.key_get(wanted)
        if len(self._cache) >= _CACHE_MAX:  # many wrong keys: forget them all, stay small
            self._cache.clear()
        self._cache[wanted] = (now, key)
        return key


async def owned_task(
    store: AsyncTaskStore, task_id: str, caller: Caller, *, wait_s: float = 0
) -> TaskRecord:
    """The caller's task, or 404: another key's task looks exactly like an unknown id.

    With ``wait_s``, long-poll until the task is final, but only for the caller's own."""
    if wait_s > 0:
        record = await store.wait(task_id, wait_s, owner=caller.owner)
    else:
        record = await store.get(task_id)
    if record is None or record.owner != caller.owner:
        raise TaskNotFound(f"no task with id {task_id!r}")
    return record
