"""API keys: where they come from, first-run creation, and constant-time checking.

Keys come from `ENHANCER_API_KEYS` (comma-separated) or, when that is unset, from the file
`<data dir>/api_key`, which `enhancer serve` (and the API's start-up) create once with mode 0600.
A request's key is compared against every configured key with `hmac.compare_digest` over SHA-256
digests, so neither which key matched nor how much of it matched shows in the timing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from app.core.config import Settings

KEY_PREFIX = "enh_"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.replace("\n", ",").split(",") if part.strip())


@lru_cache(maxsize=8)
def _keys_in_file(path: Path, _mtime_ns: int) -> tuple[bytes, ...]:
    return tuple(_digest(key) for key in _split(path.read_text(encoding="utf-8")))


def configured_key_digests(settings: Settings) -> tuple[bytes, ...]:
    """Digests of the keys this server accepts; empty when none is configured (then nothing gets in)."""
    if settings.api_keys is not None:
        return tuple(_digest(key) for key in _split(settings.api_keys))
    path = settings.api_key_file
    try:
        return _keys_in_file(path, path.stat().st_mtime_ns)
    except (FileNotFoundError, NotADirectoryError):
        return ()


def key_is_valid(candidate: str, digests: tuple[bytes, ...]) -> bool:
    """Constant time in the candidate's content: every configured key is compared, always."""
    given = _digest(candidate)
    matched = False
    for digest in digests:
        matched |= hmac.compare_digest(given, digest)
    return matched


def ensure_api_key(settings: Settings) -> tuple[str | None, bool]:
    """(key to show the user, created now). Creates <data dir>/api_key once when no key is configured.

    With ENHANCER_API_KEYS set, nothing is created and no key is returned (the operator has it).
    """
    if settings.api_keys is not None:
        return None, False
    path = settings.api_key_file
    if path.exists():
        keys = _split(path.read_text(encoding="utf-8"))
        return (keys[0] if keys else None), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    # Written aside, then linked into place: link() fails if the file exists, so two processes
    # starting at once never hand out different keys, and no one reads a half-written file.
    temporary = path.with_name(f".api_key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        return ensure_api_key(settings)
    finally:
        temporary.unlink()
    return key, True
