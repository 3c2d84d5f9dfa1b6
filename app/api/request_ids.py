"""`X-Request-ID`: taken from the client when it is a safe token, generated otherwise, current for the
whole request (app.core.logging.REQUEST_ID: every log line of the request carries it, the access
line included) and returned on every response - errors, 413s, 429s and 500s too.

The id goes into logs, so a client's value is trusted only as 1-128 characters of `[A-Za-z0-9._:-]`;
anything else (a newline, a 200-character string, non-ASCII) is replaced by a fresh id.
create_app wraps the whole middleware stack in this one, outside Starlette's ServerErrorMiddleware,
so that the 500 it writes carries the id as well.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logging import REQUEST_ID

HEADER = b"x-request-id"
_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def accepted_request_id(value: str | None) -> str:
    """The client's id when it is safe to log and echo, else a new one (uuid4 hex)."""
    if value is not None and _SAFE.fullmatch(value):
        return value
    return uuid.uuid4().hex


def _incoming(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            return bytes(value).decode("latin-1")
    return None


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(_incoming(scope))
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != HEADER]
                message["headers"] = [*headers, header]
            await send(message)

        # Not reset afterwards: uvicorn runs each request in its own task (its own copy of the
        # context), and its own lines after the app returns ("Exception in ASGI application") keep the id.
        REQUEST_ID.set(request_id)
        await self.app(scope, receive, send_with_id)
