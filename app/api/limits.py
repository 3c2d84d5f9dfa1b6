"""Request body limits: size (413), enforced before any parsing and on streamed (chunked) bodies too;
JSON nesting depth (422)."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# An enhance body nests 4 levels ({"items": [{"links": [...]}]}); anything far deeper is hostile, and
# walking it (validation, hashing) would recurse as deep.
MAX_JSON_DEPTH = 32
JSON_TOO_DEEP = f"body nests arrays/objects more than {MAX_JSON_DEPTH} levels deep"


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), without recursion."""
    depth, level = 0, [(value, 1)]
    while level:
        node, at = level.pop()
        if isinstance(node, dict | list):
            depth = max(depth, at)
            if depth > MAX_JSON_DEPTH:
                return depth
            level.extend((child, at + 1) for child in (node.values() if isinstance(node, dict) else node))
    return depth


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than the limit of {limit} bytes")


class BodySizeLimit:
    """Rejects a declared Content-Length over the limit at once; counts the bytes of any other body.

    Counting happens in `receive`, so the app never holds more than the limit: the first chunk past
    it raises BodyTooLarge (an HTTPException, which FastAPI re-raises rather than wrapping as a
    400), and the app's exception handler answers 413.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}  # a path's own limit instead of max_bytes (raw e-mails)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _reject(send, BodyTooLarge(limit))
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reject(send: Send, error: BodyTooLarge) -> None:
    body = json.dumps({"detail": error.detail, "message": error.detail}).encode()
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
