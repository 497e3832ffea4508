"""The operator's console: how minicog's log lines look on stderr (text or JSON lines).

Used by ``serve`` (and the embedding API's callers, through
:func:`minicog.server.service.serve`).  It lives outside :mod:`minicog.server`
so the command line can set logging up - and report what it is about to serve
- before it imports the HTTP machinery.

What an operator sees at INFO (docs: README "Console logs"):

* the model's setup output, one record per line (logger ``minicog.setup``);
* each prediction's log lines, prefixed with the prediction id as coglet logs
  them (``[pred_...] text``; logger ``minicog.prediction``);
* one line per finished prediction: id, status, ``predict_time``, and for a
  failure its error;
* minicog's own start-up, state and shutdown messages.

``--log-format json`` writes one object per line with ``time``, ``level``,
``logger`` and ``message``, plus the fields a record carries (:data:`FIELDS`:
``prediction_id``, ``status``, ``predict_time``, ``error``, ``source`` ...), so
a log pipeline need not parse the text.  No log call passes prediction inputs,
headers or ``WEBHOOK_AUTH_TOKEN``; webhook URLs are shown through
:func:`redact_url` (no user:password, no query string) and error texts through
:func:`redact_text`, so secrets never reach the console.

Writing happens on a thread of its own (:class:`BackgroundStreamHandler`): the
engine's I/O thread logs each prediction line and must never wait for a slow
or blocked stderr.  At most ``capacity`` records wait; beyond that they are
dropped and counted, and the count is reported.  ``logging.shutdown`` (run at
exit) flushes what is queued.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import sys
import threading
import time
import traceback
import urllib.parse
from typing import Any, Optional

__all__ = ["JSONFormatter", "TextFormatter", "BackgroundStreamHandler", "configure_logging", "log_deferred",
           "redact_url", "redact_text", "FIELDS"]

#: Record attributes (set with ``extra=``) that the JSON format carries as fields.
FIELDS = ("prediction_id", "kind", "status", "predict_time", "error", "source", "worker")

#: Records waiting to be written before new ones are dropped (and counted).
_CAPACITY = 10000
#: Seconds a flush (at exit, or when the handler is replaced) waits for the queue to drain.
_FLUSH_TIMEOUT = 5.0
#: Seconds the writer lets records gather after a write before it writes again.  Waking
#: it for every record (one line per finished prediction) cost a thread switch per
#: request, and the woken writer took the GIL from the thread answering the next one.
#: Warnings and errors are written at once; flush() and close() do not wait for it.
_GATHER_SECONDS = 0.02


def redact_url(url: str) -> str:
    """*url* without user:password and query string (where tokens live), for logs."""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:
        return "<unparsable URL>"
    host = parts.netloc.rpartition("@")[2]
    query = "?..." if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def redact_text(text: Any, url: str) -> str:
    """*text* (an error message, say) with *url*'s user:password and query string blanked."""
    out = str(text)
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:
        return out
    userinfo = parts.netloc.rpartition("@")[0]
    for secret in (userinfo, parts.query):
        if secret:
            out = out.replace(secret, "***")
    return out


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``; a prediction's log line gets coglet's ``[id]`` prefix."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")  # (whole second, its asctime text)

    def formatMessage(self, record: logging.LogRecord) -> str:
        if getattr(record, "source", None) and getattr(record, "prediction_id", None):
            record.message = f"[{record.prediction_id}] {record.message}"
        return super().formatMessage(record)

    def format_pieces(self, created: float, name: str, level: int, msg: str, args: tuple,
                      extra: Optional[dict]) -> str:
        """The line :meth:`format` gives for the record these pieces make (see
        :meth:`BackgroundStreamHandler.defer`), without making the record.

        Why: one line is logged per finished prediction (and per line a model
        prints); a record and its formatting cost about 20 us, this a fifth of that.
        """
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = self._second = (second, time.strftime(self.default_time_format, self.converter(second)))
        if len(args) == 1 and isinstance(args[0], dict) and args[0]:
            args = args[0]  # as LogRecord takes a single mapping argument
        message = msg % args if args else msg
        if extra and extra.get("source") and extra.get("prediction_id"):
            message = f"[{extra['prediction_id']}] {message}"
        msecs = int((created - second) * 1000)
        return f"{cached[1]},{msecs:03d} {logging.getLevelName(level)} {name}: {message}"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601 UTC), level, logger, message, the record's
    :data:`FIELDS` when set, and ``exception`` with the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


class BackgroundStreamHandler(logging.Handler):
    """A stream handler whose writes happen on its own thread (see the module docstring)."""

    def __init__(self, stream: Any, capacity: int = _CAPACITY) -> None:
        super().__init__()
        self.stream = stream
        self.capacity = capacity
        #: LogRecords, lines or the pieces of a record (:meth:`defer`), oldest first.
        self._queue: "collections.deque[Any]" = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._dropped = 0
        self._busy = False
        self._closed = False
        self._idle = False  # the writer waits for a first record (not gathering)
        self._urgent = False  # flush(), close() or a warning: write now
        self._thread = threading.Thread(target=self._run, name="minicog-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        # The message is fixed now: its arguments may change once the caller goes on.
        try:
            record.message = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        record.msg, record.args = record.message, None
        self._enqueue(record, record.levelno)

    def _enqueue(self, item: Any, level: int) -> None:
        """Queue a record (or its pieces); wake the writer for a warning, or if it is idle."""
        with self._cond:
            if self._closed:
                return
            if len(self._queue) >= self.capacity:
                self._dropped += 1
                return
            self._queue.append(item)
            if level >= logging.WARNING:
                self._urgent = True
                self._cond.notify()
            elif self._idle:
                self._cond.notify()

    def defer(self, name: str, level: int, msg: str, args: tuple, extra: Optional[dict]) -> None:
        """Queue a record given by its pieces, without building it (see :func:`log_deferred`).

        Under the text format the line is formatted here, on the caller's thread
        (:meth:`TextFormatter.format_pieces`, a few us); otherwise the pieces are
        queued and the writer builds the record.  Why here: the writer formatted a
        batch of lines while holding the GIL, and a request thread back from a system
        call waited for it (p99 of null predictions at one client 0.62 -> 0.45 ms).
        *args* must not change afterwards (strings and numbers).  Filters are not
        run: the caller checked that neither this handler nor its loggers have any.
        """
        if level >= self.level:
            formatter = self.formatter
            if type(formatter) is TextFormatter:
                self._enqueue(formatter.format_pieces(time.time(), name, level, msg, args, extra), level)
            else:
                self._enqueue((time.time(), name, level, msg, args, extra), level)

    @staticmethod
    def _record(item: Any) -> logging.LogRecord:
        """A queued record, or one built now from the pieces :meth:`defer` queued."""
        if isinstance(item, logging.LogRecord):
            return item
        created, name, level, msg, args, extra = item
        record = logging.LogRecord(name, level, "", 0, msg, args, None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        record.relativeCreated = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
        if extra:
            record.__dict__.update(extra)
        return record

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._dropped and not self._closed:
                    self._idle = True
                    self._cond.wait()
                    self._idle = False
                if self._closed and not self._queue:
                    self._cond.notify_all()
                    return
                batch = list(self._queue)
                self._queue.clear()
                dropped, self._dropped = self._dropped, 0
                self._busy = True
            try:
                lines = []
                for n, item in enumerate(batch, 1):
                    record = None
                    try:
                        if type(item) is str:  # a line defer() formatted (text format)
                            lines.append(item + "\n")
                        else:
                            record = self._record(item)
                            lines.append(self.format(record) + "\n")
                    except Exception:
                        if record is not None:
                            self.handleError(record)
                    if n % 32 == 0:
                        # Hand the GIL over now and then: a request thread back from a
                        # system call waits for it otherwise until the batch is formatted
                        # (records, or the JSON format), or for the switch interval.
                        time.sleep(0)
                if dropped:
                    lines.append(self.format(logging.LogRecord(
                        "minicog", logging.WARNING, __file__, 0,
                        "%d log lines were dropped: stderr is not being read fast enough", (dropped,), None)) + "\n")
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:
                pass  # stderr is gone (closed pipe): nothing useful can be done from here
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    # Let the next records gather (emit() does not wake a gathering writer).
                    if not (self._urgent or self._closed):
                        self._cond.wait(_GATHER_SECONDS)
                    self._urgent = False

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait (up to *timeout*, default 5 s) until every queued record is written."""
        deadline = time.monotonic() + (_FLUSH_TIMEOUT if timeout is None else timeout)
        with self._cond:
            while (self._queue or self._busy) and self._thread.is_alive():
                if self._queue:
                    self._urgent = True  # a gathering writer writes now
                    self._cond.notify_all()
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        super().close()


def _sole_console(logger: logging.Logger) -> Optional[BackgroundStreamHandler]:
    """minicog's console handler when it is the only place *logger*'s records go and
    nothing filters them on the way; otherwise None."""
    found = None
    current: Optional[logging.Logger] = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if found is not None or not getattr(handler, "_minicog", False) or handler.filters:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent  # type: ignore[assignment]
    return found  # type: ignore[return-value]


def log_deferred(logger: logging.Logger, level: int, msg: str, *args: Any, extra: Optional[dict] = None) -> None:
    """``logger.log(level, msg, *args, extra=extra)``, with the record built later.

    For the lines logged per prediction (its end, the model's printed lines) on the
    threads that answer requests.  When minicog's console handler is the only
    destination (``serve``'s own set-up), it gets the pieces and makes the line
    without a record (:meth:`BackgroundStreamHandler.defer`): the calling thread
    skips :mod:`logging`'s per-record work (the caller lookup, the record, two
    locks), about 40 us of a null prediction's 1 ms.  Any other set-up (an
    embedding program's handlers, pytest's capture, a filter) gets an ordinary
    record.  *args* must be immutable.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_console(logger)
    if handler is None:
        logger.log(level, msg, *args, extra=extra)
    else:
        handler.defer(logger.name, level, msg, args, extra)


def configure_logging(log_format: str = "text", level: str = "info", stream: Any = None) -> logging.Handler:
    """Send the ``minicog`` loggers to *stream* (stderr) as text or JSON lines; returns the handler.

    Calling it again reconfigures the handler it installed before (never anyone
    else's).  ``serve`` is configured twice on the way up (by the command line, then
    by :func:`~minicog.server.service.serve`) while the worker already prints its
    setup output, so the handler is kept when the stream is the same: removing it
    and adding another left a moment with no handler, and the records logged then
    (a model's first setup lines) were lost.
    """
    logger = logging.getLogger("minicog")
    stream = stream or sys.stderr
    formatter = JSONFormatter() if log_format == "json" else TextFormatter()
    old = [h for h in logger.handlers if getattr(h, "_minicog", False)]
    if len(old) == 1 and old[0].stream is stream:  # type: ignore[attr-defined]
        handler = old[0]
        handler.setFormatter(formatter)
    else:
        handler = BackgroundStreamHandler(stream)
        handler._minicog = True  # type: ignore[attr-defined]
        handler.setFormatter(formatter)
        logger.addHandler(handler)  # before the old one goes: never a moment without one
        for h in old:
            logger.removeHandler(h)
            h.close()  # writes out what it still holds
    logger.propagate = False
    name = {"warn": "WARNING"}.get(level.lower(), level.upper())
    logger.setLevel(getattr(logging, name, logging.INFO))
    return handler
