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
from contextvars import ContextVar
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


# Request ids ------------------------------------------------------------------------------------
# The API's RequestIds middleware (app/api/request_ids.py) sets the id of the request being served;
# RequestIdFilter puts it on every LogRecord logged meanwhile (the JSON formatter then carries it as
# an extra field, the text formatters append ` [req <id>]`). The worker logs a job's lines with
# `extra={"request_id": <the job's request id>}`, which the filter leaves as it is.

REQUEST_ID: ContextVar[str | None] = ContextVar("enhancer_request_id", default=None)


def current_request_id() -> str | None:
    return REQUEST_ID.get()


def request_id_extra(request_id: str | None) -> dict[str, str]:
    """`extra=` for a log line about something a request started (nothing when it had no id)."""
    return {"request_id": request_id} if request_id else {}


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (the current request's) to every record that has none; lines outside a
    request get no attribute at all, so their JSON and text stay as they were."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class RequestIdText(logging.Formatter):
    """Wraps a text formatter: ` [req <id>]` at the end of the first line of a record with a request id
    (before any traceback); other lines exactly as the wrapped formatter writes them."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        request_id = getattr(record, "request_id", None)
        if not request_id:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [req {request_id}]{newline}{rest}"


def uvicorn_text_formatter(inner: str, **kwargs: Any) -> logging.Formatter:
    """dictConfig factory: uvicorn's own text formatter (`inner`, with its arguments) + the request id."""
    module, _, name = inner.rpartition(".")
    formatter_class = getattr(__import__(module, fromlist=[name]), name)
    return RequestIdText(formatter_class(**kwargs))


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
    return JsonFormatter() if json_enabled() else RequestIdText(logging.Formatter(TEXT_FORMAT))


# Libraries whose INFO lines say nothing a user acts on ("Context impl SQLiteImpl."): warnings only,
# unless --verbose.
QUIET_LOGGERS = ("alembic",)


def configure_logging(level: int = logging.INFO, *, verbose: bool = False) -> None:
    """Root logger to stderr in the chosen format (replaces handlers a previous call installed)."""
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter())
    handler.addFilter(RedactSecrets())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's dictConfig: its own text setup by default; with JSON its loggers go through ours.
    Either way every handler redacts secrets (RedactSecrets), and every uvicorn logger stamps the
    request id (RequestIdFilter: uvicorn writes a request's access line while the request's own
    context is current, from inside the app's `send`)."""
    filters = {
        "redact": {"()": f"{__name__}.RedactSecrets"},
        "request_id": {"()": f"{__name__}.RequestIdFilter"},
    }
    if not json_enabled():
        from uvicorn.config import LOGGING_CONFIG

        config = copy.deepcopy(LOGGING_CONFIG)
        config["filters"] = filters
        for handler in config["handlers"].values():
            handler["filters"] = ["redact"]
        for formatter in config["formatters"].values():
            formatter["inner"] = formatter.pop("()")
            formatter["()"] = f"{__name__}.uvicorn_text_formatter"
        for logger in config["loggers"].values():
            logger["filters"] = ["request_id"]
        return config
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]}
        },
        "loggers": {
            "uvicorn": {
                "handlers": ["default"],
                "level": "INFO",
                "propagate": False,
                "filters": ["request_id"],
            },
            "uvicorn.error": {"level": "INFO", "filters": ["request_id"]},
            "uvicorn.access": {
                "handlers": ["default"],
                "level": "INFO",
                "propagate": False,
                "filters": ["request_id"],
            },
        },
    }


def use_json_on_celery_loggers() -> None:
    """Celery sets up its own handlers in the worker; swap their formatters when JSON is on. As text,
    its formatters are kept and a job's request id (`extra=`) is appended (RequestIdText)."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    use_json = json_enabled()

    def _swap(logger: logging.Logger | None = None, **_: object) -> None:
        for handler in (logger or logging.getLogger()).handlers:
            if use_json:
                handler.setFormatter(JsonFormatter())
            elif not isinstance(handler.formatter, RequestIdText):
                handler.setFormatter(RequestIdText(handler.formatter or logging.Formatter()))

    after_setup_logger.connect(_swap, weak=False)
    after_setup_task_logger.connect(_swap, weak=False)
    _swap(logging.getLogger())  # handlers that exist already (logging set up before this module loaded)
