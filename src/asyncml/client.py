"""A small synchronous client on httpx: what the CLI needs to submit, inspect and wait.

Errors come back as the same classes the server raised, mapped from the body's ``type``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from asyncml.errors import AsyncmlError, ServiceUnavailable, TaskTimeout, error_class_for
from asyncml.store import FINAL_STATUSES, TaskStatus

_LONG_POLL_S = 30.0


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, timeout_s: float = 10.0):
        self._http = httpx.Client(
            base_url=base_url, timeout=httpx.Timeout(timeout_s, read=_LONG_POLL_S + timeout_s)
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"cannot reach the service: {exc}") from exc
        if response.is_success:
            return response.json()
        try:
            body = response.json()
            cls = error_class_for(str(body.get("type", "")))
            message = str(body.get("message", response.text))
        except ValueError:
            cls, message = AsyncmlError, f"HTTP {response.status_code}: {response.text[:200]}"
        raise cls(message)

    def kinds(self) -> list[dict[str, Any]]:
        kinds: list[dict[str, Any]] = self._request("GET", "/v1/kinds")
        return kinds

    def submit(self, kind: str, inputs: dict[str, Any]) -> dict[str, Any]:
        accepted: dict[str, Any] = self._request("POST", f"/v1/tasks/{kind}", json=inputs)
        return accepted

    def get(self, task_id: str, *, wait_s: float = 0) -> dict[str, Any]:
        params = {"wait": wait_s} if wait_s > 0 else None
        task: dict[str, Any] = self._request("GET", f"/v1/tasks/{task_id}", params=params)
        return task

    def cancel(self, task_id: str) -> dict[str, Any]:
        task: dict[str, Any] = self._request("DELETE", f"/v1/tasks/{task_id}")
        return task

    def wait(self, task_id: str, *, timeout_s: float = 300.0) -> dict[str, Any]:
        """Long-poll in slices of at most 30 s until final; raise TaskTimeout at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            task = self.get(task_id, wait_s=max(0.0, min(_LONG_POLL_S, remaining)))
            if TaskStatus(task["status"]) in FINAL_STATUSES:
                return task
            if remaining <= 0:
                raise TaskTimeout(f"task {task_id} not final after {timeout_s:g} s")
