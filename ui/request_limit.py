"""A cap on every HTTP request body the server reads (``AppConfig.max_request_bytes``).

Gradio parses an event's JSON, and the OpenAI-compatible routes a request's, before any of the
playground's size checks can run: without a cap, one hostile request of a few hundred megabytes
is held in memory whole. This ASGI middleware sits in front of every route: a declared
``Content-Length`` over the cap is refused at once, and a body sent without one (chunked) is
read here as it arrives (at most the cap is held) and refused when it passes the cap. The answer
is a 413 with one line that names the cap (no path, no internal detail).
"""
from __future__ import annotations

import json
from typing import Any

from starlette.middleware import Middleware


class RequestBodyLimit:
    """ASGI middleware: bodies over ``max_bytes`` get 413 before anything reads them."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:  # the server holds the client to it: nothing more can arrive
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(send)
            else:
                await self.app(scope, receive, send)
            return
        # no length declared (chunked): read it here, at most the cap, then hand it on
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"error": f"the request is larger than this playground accepts "
                                    f"({self.max_bytes:,} bytes at most)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def request_limit(max_bytes: int) -> Middleware:
    """The middleware for ``demo.launch(app_kwargs={"middleware": [...]})``."""
    return Middleware(RequestBodyLimit, max_bytes=max_bytes)
