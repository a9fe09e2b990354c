"""The HTTP ceiling: a bare FastAPI app that answers the service's two requests at once.

Same request pattern as a task on the service (a submit that returns QUEUED, then one poll
that returns SUCCESS), same server (uvicorn, one process), no broker and no store: what is
left is the cost of HTTP, JSON and the framework on this machine.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/tasks/{kind}", status_code=202)
async def submit(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": kind, "status": "QUEUED"}


@app.get("/v1/tasks/{task_id}")
async def get_task(task_id: str, wait: float = 0) -> dict[str, Any]:
    return {"id": task_id, "status": "SUCCESS", "result": None, "error": None}
