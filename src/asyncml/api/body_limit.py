"""Refuse request bodies over a cap before they are read in full.

Starlette reads a whole body into memory before validation; without this one POST could
exhaust the API's memory. A declared ``Content-Length`` over the cap is refused at once;
a chunked body is counted as it streams and cut off when it passes the cap.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised inside the app's body read, so the app's own error handler answers 413.

    (FastAPI turns any other exception raised while reading the body into a 400.)
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"request body over the limit of {max_bytes} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"type": "body_too_large", "message": BodyTooLarge(self.max_bytes).detail}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
