"""Structured logs: one JSON object per line on stderr, so any collector can parse them.

No line shows a URL's password (``amqp://user:***@host``), whichever code logged the URL.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=`
# and is emitted as a field of its own.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}

# "scheme://user:password@": the password is whatever the user name is followed by, up to the "@".
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@\"]*):[^\s/@\"]+@")


def hide_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    # Most lines hold no URL at all; they skip the regular expression.
    return _URL_PASSWORD.sub(r"\1:***@", text) if "://" in text else text


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, extra fields, exception."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return hide_passwords(json.dumps(entry, default=str))


class _Fields(logging.Filter):
    """Adds fixed fields to every record that does not carry them already (see ``add_fields``)."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def add_fields(**fields: str) -> None:
    """Give every line logged from now on these fields (say, the worker's id), on every handler of the root logger.

    On the handlers, not the root logger: a logger's filters see only the records logged through it
    by name, never those its children pass up.
    """
    for handler in logging.getLogger().handlers:
        existing = next((f for f in handler.filters if isinstance(f, _Fields)), None)
        if existing is None:
            handler.addFilter(_Fields(dict(fields)))
        else:
            existing.fields.update(fields)


def setup(service: str, level: str = "INFO") -> None:
    """Route all logging to stderr as JSON lines tagged with the service name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aio-pika and aiormq narrate every reconnect attempt at INFO/WARNING with
    # tracebacks; our own adapters log the outage once, in a line an operator can read.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
