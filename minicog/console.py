"""The operator's console: how minicog's log lines look on stderr (text or JSON lines).

Used by ``serve`` (and the embedding API's callers, through
:func:`minicog.server.service.serve`).  It lives outside :mod:`minicog.server`
so the command line can set logging up - and report what it is about to serve
- before it imports the HTTP machinery.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import traceback
from typing import Any

__all__ = ["JSONFormatter", "configure_logging"]


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(log_format: str = "text", level: str = "info", stream: Any = None) -> logging.Handler:
    """Send the ``minicog`` loggers to *stream* (stderr) as text or JSON lines; returns the handler.

    Calling it again replaces the handler it installed before (never anyone else's).
    """
    logger = logging.getLogger("minicog")
    for h in list(logger.handlers):
        if getattr(h, "_minicog", False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._minicog = True  # type: ignore[attr-defined]
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    name = {"warn": "WARNING"}.get(level.lower(), level.upper())
    logger.setLevel(getattr(logging, name, logging.INFO))
    return handler
