"""/docs (Swagger UI), /redoc (ReDoc) and /openapi.json, with every asset served by the app itself.

No CDN: the laptop may be offline, and a script from a CDN is code nobody pinned. The files come
from the `fastapi-offline` wheel (pinned in pyproject.toml): swagger-ui-bundle.js, swagger-ui.css,
redoc.standalone.js. Swagger UI's start-up code is a file here too (no inline script), so the two
pages' Content-Security-Policy allows scripts from 'self' only (app/api/security_headers.py).
Who may read the pages and the spec: app/api/exposure.py. The assets themselves are public files.
"""

from __future__ import annotations

import copy
from html import escape
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.params import Depends
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS_PATH = "/docs/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
CACHE = {"Cache-Control": "public, max-age=86400"}

# Swagger UI's start-up, as FastAPI's own page has it inline; the spec's URL comes from the page.
SWAGGER_INIT = """\
"use strict";
(function () {
  var element = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: element.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
"""

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - Swagger UI</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-init.js"></script>
</body>
</html>
"""

REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - ReDoc</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
</head>
<body>
<redoc spec-url="{openapi}"></redoc>
<script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""


def hoist_local_defs(spec: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema embedded whole (the correction body: `enhancer schema --generated`) keeps its
    definitions in `$defs` and points at them with `#/$defs/...`, which in the OpenAPI document
    means its root: ReDoc stops at it ("Invalid reference token: $defs"). Move them to
    components/schemas, in a copy (FastAPI shares a route's openapi_extra dicts with the spec)."""
    spec = copy.deepcopy(spec)
    components = spec.setdefault("components", {}).setdefault("schemas", {})

    def rewrite(node: Any, names: dict[str, str]) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in names:
                node["$ref"] = "#/components/schemas/" + names[ref[8:]]
            for value in node.values():
                rewrite(value, names)
        elif isinstance(node, list):
            for value in node:
                rewrite(value, names)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            defs = node.pop("$defs", None) if node is not components else None
            if isinstance(defs, dict):
                names = {}
                for name, definition in defs.items():
                    target, n = name, 1
                    while target in components and components[target] != definition:
                        n += 1
                        target = f"{name}{n}"
                    components[target] = definition
                    names[name] = target
                rewrite(node, names)
                for definition in defs.values():
                    rewrite(definition, names)
            for value in list(node.values()):
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(spec.get("paths", {}))
    return spec


def install_docs(app: FastAPI, *, dependencies: list[Depends]) -> None:
    """The pages and the spec behind `dependencies` (who may read them); the assets open.

    The app is built with docs_url, redoc_url and openapi_url None, so FastAPI adds none of its own."""
    router = APIRouter(include_in_schema=False)

    def _page(template: str, request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        values = {"title": app.title, "assets": root + ASSETS_PATH, "openapi": root + "/openapi.json"}
        return HTMLResponse(template.format(**{k: escape(v, quote=True) for k, v in values.items()}))

    @router.get("/openapi.json", dependencies=dependencies)
    def openapi(request: Request) -> JSONResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        if root and app.root_path_in_servers:
            servers = app.servers = app.servers or []
            if root not in {server.get("url") for server in servers}:
                servers.insert(0, {"url": root})
                app.openapi_schema = None
        return JSONResponse(app.openapi())

    @router.get("/docs", dependencies=dependencies)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return _page(SWAGGER_PAGE, request)

    @router.get("/redoc", dependencies=dependencies)
    async def redoc(request: Request) -> HTMLResponse:
        return _page(REDOC_PAGE, request)

    @router.get(ASSETS_PATH + "/swagger-init.js")
    async def swagger_init() -> Response:
        return Response(SWAGGER_INIT, media_type="text/javascript", headers=CACHE)

    @router.get(ASSETS_PATH + "/{name}")
    async def asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(status_code=404, detail=f"no asset {name!r}")
        return FileResponse(ASSETS_DIR / name, media_type=ASSETS[name], headers=CACHE)

    app.include_router(router)
