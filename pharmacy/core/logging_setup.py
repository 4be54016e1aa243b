"""Logging without PHI: request ids, JSON in production, and a redacting filter as a second line.

The first line of defence is never passing patient data to a logger; the filter masks what
slips through (emails, dates, query strings, link tokens) in every message.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from flask import g, has_request_context

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4})\b")
_QUERY = re.compile(r"\?[^\s\"']*")
_TOKEN = re.compile(r"[A-Za-z0-9_\-\.]{40,}")
_PHONE = re.compile(r"\(?\b\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b")
_MONTHS = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_WORDY_DATE = re.compile(rf"\b(?:{_MONTHS} \d{{1,2}},? \d{{4}}|\d{{1,2}} {_MONTHS},? \d{{4}})\b", re.IGNORECASE)
# Patient links: the path segment after /r/ or /preferences/ is a credential, whatever its length.
_LINK = re.compile(r"(/(?:r|preferences|renewal-request)/)[^\s/?\"']+")
# The development server colours its request lines; escape codes have no place in a log file.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def redact(text: str) -> str:
    text = _ANSI.sub("", text)
    text = _EMAIL.sub("[email]", text)
    text = _QUERY.sub("?[query]", text)
    text = _LINK.sub(r"\1[token]", text)
    text = _WORDY_DATE.sub("[date]", text)
    text = _TOKEN.sub("[token]", text)
    text = _DATE.sub("[date]", text)
    return _PHONE.sub("[phone]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        if record.exc_info:
            # Tracebacks carry exception text, which can hold patient data: keep only the type.
            exc_type = record.exc_info[0]
            record.msg += f" [{exc_type.__name__ if exc_type else 'exception'}]"
            record.exc_info = None
            record.exc_text = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname,
                "logger": record.name,
                "request_id": getattr(record, "request_id", "-"),
                "message": record.getMessage(),
            }
        )


def configure(log_format: str, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pharmacy", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._pharmacy = True  # type: ignore[attr-defined]
    handler.addFilter(RedactingFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # werkzeug's request lines go through the same filter (query strings and tokens masked).
    logging.getLogger("werkzeug").propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
