"""Small steps every integration test takes against the HTTP API."""

from __future__ import annotations

from typing import Any

import httpx

FINAL = {"SUCCESS", "FAILURE", "CANCELLED"}


def submit_audio(api: httpx.Client, url: str) -> str:
    """Submit an audio.length task; the id of the accepted task."""
    response = api.post("/v1/tasks/audio.length", json={"audio_url": url})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


def wait_final(api: httpx.Client, task_id: str, wait: float = 30) -> dict[str, Any]:
    """Long-poll once; the task must be final by then."""
    task: dict[str, Any] = api.get(f"/v1/tasks/{task_id}", params={"wait": wait}).json()
    assert task.get("status") in FINAL, task
    return task
