"""JSON log lines carrying the request ID of the request being served.

Nothing here logs headers, cookies or bodies; callers pass only the fields they choose
through ``extra``. As a second line of defence, values that look like credentials are
redacted before a line is written.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRETISH = re.compile(
    r"(sk-(?:admin|proj|svcacct)-[A-Za-z0-9_\-]{8,}|jrt_[A-Za-z0-9_\-]{16,}|"
    r"Bearer\s+[A-Za-z0-9._\-]{8,}|"
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+)"
)

# User-info in a URL (``http://user:password@host``), wherever a URL ends up in a line.
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.\-]*://)[^\s/@]+@", re.IGNORECASE)


def redact(text: str) -> str:
    return _URL_USERINFO.sub(r"\1[redacted]@", _SECRETISH.sub("[redacted]", text))


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(line, default=str).decode()


_base_factory = logging.getLogRecordFactory()


def _record_with_request_id(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # Stamped when the record is made, so handlers that format later still see it.
    record = _base_factory(*args, **kwargs)
    rid = request_id_var.get()
    if rid is not None:
        record.request_id = rid
    return record


logging.setLogRecordFactory(_record_with_request_id)


def setup(level: str = "INFO") -> None:
    """Route every logger (ours and libraries') through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Servers' own access logs would duplicate ours and print raw request lines.
    for name in ("hypercorn.access", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
