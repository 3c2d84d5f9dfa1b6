from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.api.deps import ReadSessionDep, SettingsDep
from app.api.exposure import refusal
from app.crud import live_workers

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _broker_ok(url: str) -> tuple[bool, str]:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return True, "ok"
    except Exception as error:  # any failure means not ready; say which
        return False, f"{type(error).__name__}: {error}"


@router.get("/readyz", responses={503: {"description": "Not ready: see checks"}})
def readyz(request: Request, session: ReadSessionDep, settings: SettingsDep) -> JSONResponse:
    """Database reachable, broker reachable, and at least one worker heartbeat recently.

    The checks (error texts name hosts and drivers) go to those who may read /metrics
    (ENHANCER_DOCS_AND_METRICS, app/api/exposure.py); anyone else gets the status alone."""
    checks: dict[str, Any] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"{type(error).__name__}: {error}"
    ok, checks["broker"] = _broker_ok(settings.celery_broker_url)
    try:
        workers = live_workers(session, within_seconds=settings.worker_heartbeat_seconds * 3 + 5)
        checks["workers"] = len(workers)
    except Exception as error:
        workers, checks["workers"] = [], f"{type(error).__name__}: {error}"
    ready = checks["database"] == "ok" and ok and bool(workers)
    body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
    if refusal(request, settings) is None:
        body["checks"] = checks
    return JSONResponse(body, status_code=200 if ready else 503)
