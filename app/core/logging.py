"""Log setup for every process: text lines by default, one JSON object per line with ENHANCER_LOG_FORMAT=json.

Read from the environment rather than Settings: logging is configured before anything else is loaded,
and the worker (a `celery` process started by `enhancer worker`) inherits the variable.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from datetime import UTC, datetime
from typing import Any

LOG_FORMAT_ENV = "ENHANCER_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is worth keeping
# (except uvicorn's `color_message`, the message again with terminal colour codes).
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


# Secrets never reach a log line: query parameters that carry one (an old `/review?api_key=` link,
# a client's `?token=`), and anything shaped like our API keys, whatever logged it.
_SECRET_PARAM_RE = re.compile(
    r"(?i)([?&;](?:api_key|apikey|key|access_token|token|password|passwd|secret|session|sig)=)[^&\s\"'#]*"
)
_API_KEY_RE = re.compile(r"\benh_[A-Za-z0-9_\-]{8,}")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _API_KEY_RE.sub(REDACTED, _SECRET_PARAM_RE.sub(rf"\1{REDACTED}", text))


class RedactSecrets(logging.Filter):
    """On every handler: the message and its string arguments redacted in place (uvicorn's access
    formatter reads its five arguments by position, so they stay a tuple of the same shape)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def json_enabled() -> bool:
    value = os.environ.get(LOG_FORMAT_ENV, "text").strip().lower()
    if value not in ("text", "json", ""):
        raise ValueError(f"{LOG_FORMAT_ENV} must be 'text' or 'json', not {value!r}")
    return value == "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, process, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_formatter() -> logging.Formatter:
    return JsonFormatter() if json_enabled() else logging.Formatter(TEXT_FORMAT)


# Libraries whose INFO lines say nothing a user acts on ("Context impl SQLiteImpl."): warnings only,
# unless --verbose.
QUIET_LOGGERS = ("alembic",)


def configure_logging(level: int = logging.INFO, *, verbose: bool = False) -> None:
    """Root logger to stderr in the chosen format (replaces handlers a previous call installed)."""
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's dictConfig: its own text setup by default; with JSON its loggers go through ours.
    Either way every handler redacts secrets (RedactSecrets)."""
    redacting = {"redact": {"()": f"{__name__}.RedactSecrets"}}
    if not json_enabled():
        from uvicorn.config import LOGGING_CONFIG

        config = copy.deepcopy(LOGGING_CONFIG)
        config["filters"] = redacting
        for handler in config["handlers"].values():
            handler["filters"] = ["redact"]
        return config
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": redacting,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]}
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["default"], "level": "INFO", "propagate": False},
        },
    }


def use_json_on_celery_loggers() -> None:
    """Celery sets up its own handlers in the worker; swap their formatters when JSON is on."""
    if not json_enabled():
        return
    from celery.signals import after_setup_logger, after_setup_task_logger

    def _swap(logger: logging.Logger | None = None, **_: object) -> None:
        for handler in (logger or logging.getLogger()).handlers:
            handler.setFormatter(JsonFormatter())

    after_setup_logger.connect(_swap, weak=False)
    after_setup_task_logger.connect(_swap, weak=False)
    _swap(logging.getLogger())  # handlers that exist already (logging set up before this module loaded)
