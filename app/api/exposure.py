"""Who may read the operator endpoints: /metrics, /docs, /redoc, /openapi.json, and /readyz's details.

ENHANCER_DOCS_AND_METRICS decides (docs/deployment.md):

- `loopback` (default): clients on this host only (127.0.0.0/8, ::1); anyone else gets a 403 that
  says why, and /readyz answers them with its status alone.
- `key`: loopback clients, and any client that sends an API key (X-API-Key or Authorization: Bearer),
  e.g. a Prometheus on another host.
- `open`: everyone (the port itself is the boundary, e.g. docker-compose.yml publishing on 127.0.0.1).

The client is the peer of the TCP connection. Behind a reverse proxy listed in ENHANCER_TRUSTED_PROXIES
it is the nearest X-Forwarded-For address that is not itself a trusted proxy (as uvicorn picks it); a
request without the header is the proxy's host's own. One through a trusted proxy on another host is
never local (its loopback clients are that host's). From anyone else X-Forwarded-For is ignored: it is
the client's own claim. (uvicorn, under `enhancer serve`, already takes the client from X-Forwarded-For
when the peer is 127.0.0.1, its FORWARDED_ALLOW_IPS default: a proxy on this host that sends it makes
its clients count as theirs even before ENHANCER_TRUSTED_PROXIES names it.)
"""

from __future__ import annotations

import ipaddress

from fastapi import Depends, HTTPException, Request

from app.api.deps import API_KEY_HEADER, SettingsDep, sent_api_key
from app.core.config import Settings
from app.core.security import configured_key_digests, key_is_valid


def client_host(request: Request, settings: Settings) -> str | None:
    """The address the request comes from (see the module docstring); None when unknown (a Unix socket)."""
    peer = request.client.host if request.client else None
    trusted = settings.trusted_proxy_hosts
    if peer is None or peer not in trusted:
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer  # all trusted: the first; no header: the proxy's own request


def is_local(request: Request, settings: Settings) -> bool:
    """A client on this host: a loopback peer, or a loopback client of a trusted proxy that is on
    loopback itself (a proxy on another host has loopback clients of its own host, not of this one)."""
    peer = request.client.host if request.client else None
    if peer is not None and peer in settings.trusted_proxy_hosts and not is_loopback(peer):
        return False
    return is_loopback(client_host(request, settings))


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def refusal(request: Request, settings: Settings) -> HTTPException | None:
    """None when the request may read the operator endpoints, else the answer that says why not."""
    mode = settings.docs_and_metrics
    if mode == "open" or is_local(request, settings):
        return None
    path = request.url.path
    if mode == "key":
        key = sent_api_key(request)
        if key and key_is_valid(key, configured_key_digests(settings)):
            return None
        if not key:
            return HTTPException(
                status_code=401,
                detail=f"{path} needs an API key from a client that is not on this host: send it in "
                f"the {API_KEY_HEADER} header or as 'Authorization: Bearer <key>' "
                "(ENHANCER_DOCS_AND_METRICS=key)",
                headers={"WWW-Authenticate": 'Bearer realm="enhancer"'},
            )
        return HTTPException(status_code=403, detail="invalid API key")
    return HTTPException(
        status_code=403,
        detail=f"{path} is served to clients on this host only (ENHANCER_DOCS_AND_METRICS=loopback); "
        "set ENHANCER_DOCS_AND_METRICS=key to serve it to requests with an API key, or =open "
        "(docs/deployment.md)",
    )


async def require_operator_access(request: Request, settings: SettingsDep) -> None:
    refused = refusal(request, settings)
    if refused is not None:
        raise refused


OperatorAccessDep = Depends(require_operator_access)
