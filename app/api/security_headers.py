"""Response headers that make the browser safer. On every response: `nosniff`, and no Referer to
other sites (a review-page URL names records; within the site it backs the form posts' origin
check). On the review pages: a strict Content-Security-Policy (no script at all, inline styles
only, forms post back only here) and no framing (clickjacking). On /docs and /redoc: scripts from
this site only (the app serves Swagger UI and ReDoc itself, app/api/docs.py), no framing."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALWAYS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
REVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGES = [(b"content-security-policy", REVIEW_CSP.encode()), (b"x-frame-options", b"DENY")]
# Swagger UI and ReDoc: their scripts and styles from here; both set inline styles, ReDoc starts a
# blob: worker for its search; "Try it out" calls this API.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
DOCS_PAGES = [(b"content-security-policy", DOCS_CSP.encode()), (b"x-frame-options", b"DENY")]
DOCS_PATHS = {"/docs", "/redoc"}


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        pages = PAGES if path.startswith("/review") else DOCS_PAGES if path in DOCS_PATHS else []
        extra = ALWAYS + pages

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
