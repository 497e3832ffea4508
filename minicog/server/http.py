"""The HTTP front-end: Cog's routes on :mod:`http.server`, with parsing and error mapping.

:class:`HTTPServer` speaks HTTP/1.1 with keep-alive on :mod:`http.server`'s
handler machinery, over the connection layer of :mod:`minicog.server.connections`:
connections wait in a selector (idle ones and slow ones cost no thread) and whole
buffered requests are answered by a bounded pool of threads.  What it adds to the
standard library, and why:

* **Bounded reads.**  An idle keep-alive connection is closed after
  ``Settings.read_timeout`` seconds; a request head must arrive within
  ``Settings.header_timeout`` of its first byte (slow loris), a body may not stall
  longer than ``read_timeout``.  The request line plus headers may take
  ``Settings.max_header_bytes`` (more → 431) and a body ``Settings.max_body_bytes``
  (more → 413, answered before reading it, then the connection is closed since the
  unread body would desynchronise it).  An HTTP/0.9 request line gets a JSON 400
  (``GET /``) or 505 (``GET / HTTP/0.9``) in HTTP/1.0 framing.
* **JSON errors only.**  :meth:`Handler.send_error` is overridden, so even the
  errors :mod:`http.server` produces itself (bad request line, unsupported
  method) answer ``{"error": ...}`` as JSON, never an HTML page.  Exceptions in a
  handler are logged with their traceback and answered 500 JSON; a
  :class:`~minicog.errors.MinicogError` answers its ``http_status`` and
  ``body()``; 409 and 503 carry ``Retry-After: Settings.retry_after``.  Where
  coglet answers ``text/plain`` (415, 400 for bad JSON, 422 for a body of the
  wrong shape) or an empty body (404, 405), minicog answers JSON
  ``{"error": "<the same text>"}`` - a JSON client can then always parse the
  body of an error.
* **Cog's request rules** (:func:`parse_prediction_request`): no
  ``Content-Type`` → the body is ignored and treated as ``{}``; a type other than
  ``application/json`` or ``*/*+json`` → 415; malformed JSON → 400; a document of
  the wrong shape (not an object, ``id`` not a string, ``context`` not a map of
  strings, ``webhook_events_filter`` with unknown events) → 422 with serde-like
  messages.  ``input`` missing or ``null`` → ``{}``.  Prediction ids (URL or body)
  must be 1..``Settings.max_prediction_id_chars`` characters without ``/``,
  whitespace or control characters (they end up in file names and headers);
  others → 400.
* **Busy slots.**  A request that finds every slot busy waits for one, parked
  without a thread, up to ``Settings.slot_wait`` seconds (each prediction's end
  lets the oldest waiter in), then is answered 409 as in Cog.  Clients that
  retry a 409 at once would otherwise turn all spare CPU into 409s and starve
  the running predictions.
* **Modes.**  Sync by default (the connection is parked until the record ends,
  with no thread: the selector watches the socket, and a client that hangs up
  cancels its prediction); ``Prefer: respond-async`` (parsed as RFC 7240, so
  ``respond-async, wait=5`` works too) → 202 with ``Preference-Applied``;
  ``Accept: text/event-stream`` → SSE, chunked, every event with an ``id:``,
  ``Last-Event-ID`` honoured on reattach (a ``PUT`` of the id, or a ``GET`` of
  it, which never starts a prediction), whatever events a reader is behind
  written as one chunk with one ``sendall`` (so the writer keeps pace with a
  fast model), a keep-alive comment after
  ``Settings.sse_keepalive_interval`` seconds of silence.

Responses are rendered by :func:`~minicog.server.outputs.render_json`, so file
outputs stream from disk into the socket with an exact ``Content-Length``.

The server holds an *app* (the :class:`~minicog.server.service.Service`) that
owns state; this module only speaks HTTP.  The app's methods are listed in
:class:`App`.
"""

from __future__ import annotations

import collections
import email.utils
import http.server
import json
import logging
import socket
import threading
import time
import urllib.parse
from typing import Any, Optional, Protocol

from minicog._version import __version__
from minicog.errors import (AtCapacity, HeaderTooLarge, InputValidationError, MinicogError, NotAcceptable, NotFound,
                            PayloadTooLarge, RequestError, ServiceUnavailable, UnsupportedMediaType)
from minicog.server import docs
from minicog.server.connections import Connection, ConnectionServer, RequestReader, SocketWriter, peer_state
from minicog.server.deadlines import cancel_after, prefer_wait
from minicog.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from minicog.server.outputs import Body, render_json
from minicog.server.sse import KEEPALIVE, encode_event
from minicog.settings import Settings

__all__ = ["HTTPServer", "Handler", "Headers", "App", "PredictionRequest", "parse_prediction_request", "parse_prefer",
           "wants_event_stream", "BodyShapeError", "check_id", "WEBHOOK_EVENTS"]

log = logging.getLogger("minicog.http")

WEBHOOK_EVENTS = ("start", "output", "logs", "completed")

_CT_MESSAGE = "Expected request with `Content-Type: application/json`"
_STREAM_406 = "This model does not support streaming responses. Add @cog.streaming to predict() to enable SSE."
_TRAIN_406 = "Training endpoints do not support streaming responses."
# SSE writes: events taken per wake-up, and bytes per HTTP chunk (one sendall each).
_SSE_BATCH_EVENTS = 4096
# Header lines per request (http.server's own limit).
_MAX_HEADERS = 100
_SSE_CHUNK_BYTES = 64 * 1024


def _ALWAYS() -> bool:
    return True
# Status lines by code, and the Date header of the current second: http.server formats
# both for every response, which cost more than the rest of a null prediction's answer.
_STATUS_LINES: dict[int, bytes] = {}
_date_line: tuple[int, bytes] = (0, b"")


def _status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        reason = http.server.BaseHTTPRequestHandler.responses.get(code, ("",))[0]
        line = _STATUS_LINES[code] = f"HTTP/1.1 {code} {reason}\r\n".encode("latin-1")
    return line


def _date_header() -> bytes:
    """``Date: ...`` (RFC 7231, what ``date_time_string`` gives), made once a second."""
    global _date_line
    second = int(time.time())
    cached = _date_line  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _date_line = (second, f"Date: {email.utils.formatdate(second, usegmt=True)}\r\n".encode("latin-1"))
    return cached[1]


class BodyShapeError(RequestError):
    """Well-formed JSON of the wrong shape (coglet: 422 text/plain)."""

    http_status = 422


class PredictionRequest:
    """The fields of a prediction/training request body, checked for shape."""

    __slots__ = ("id", "input", "context", "webhook", "events_filter", "spooled")

    def __init__(self, id: Optional[str] = None, input: Any = None, context: Optional[dict] = None,
                 webhook: Optional[str] = None, events_filter: Optional[list] = None):
        self.id = id
        self.input = {} if input is None else input
        self.context = context or {}
        self.webhook = webhook
        self.events_filter = events_filter
        #: Large data: URI inputs already decoded to files (minicog.server.spool); the
        #: request owns their files until a prediction record takes them.
        self.spooled: list = []


def _describe(value: Any) -> str:
    """serde's "invalid type" wording for a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _shape(message: str) -> BodyShapeError:
    return BodyShapeError(f"Failed to deserialize the JSON body into the target type: {message}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # json reads 1e400 as inf, which JSON cannot carry on (serde: "number out of range").
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"number out of range: {text}")
    return value


_INF = float("inf")
# Made once (json.loads with options builds a decoder per call); stateless, so shared.
_BODY_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find_surrogate(value: Any, path: str) -> Optional[str]:
    """The JSON path (``id``, ``context.k``, ``input.a[0]``) of the first string holding a
    lone surrogate, key or value, or None."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if _has_surrogate(item):
                return where or "the document"
        elif isinstance(item, dict):
            for k, v in reversed(list(item.items())):
                shown = f"{where}.{k}" if where else k
                if _has_surrogate(k):
                    return f"a key of {where or 'the document'}"
                stack.append((v, shown))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def check_id(value: str, settings: Settings) -> str:
    """Raise RequestError (400) unless *value* is usable as a prediction id."""
    if not value or len(value) > settings.max_prediction_id_chars:
        raise RequestError(f"Invalid prediction id: must be 1 to {settings.max_prediction_id_chars} characters")
    if "/" in value or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        raise RequestError(f"Invalid prediction id {value!r}: no '/', whitespace or control characters allowed")
    return value


def parse_prediction_request(content_type: Optional[str], body: bytes, settings: Optional[Settings] = None) -> PredictionRequest:
    """Cog's body rules for POST/PUT prediction and training routes (see the module docstring).

    Large ``data:`` URI inputs are decoded to files first (:mod:`minicog.server.spool`);
    if that body does not parse, or a spooled string is not an input's value, the
    files are dropped and the original body is parsed, so errors read the same.
    """
    settings = settings or Settings()
    limit = settings.data_uri_spool_chars
    if content_type is not None and limit and len(body) >= limit:
        from minicog.server import spool

        reduced, found = spool.spool_data_uris(body, min_chars=limit, directory=settings.tmp_dir)
        if found:
            try:
                req = _parse_prediction_request(content_type, reduced, settings)
            except MinicogError:
                req = None
            if req is not None and spool.attach(req.input, found):
                req.spooled = list(found.values())
                return req
            spool.release(found.values())
    return _parse_prediction_request(content_type, body, settings)


def _parse_prediction_request(content_type: Optional[str], body: bytes, settings: Settings) -> PredictionRequest:
    if content_type is None:
        return PredictionRequest()
    media = content_type.split(";", 1)[0].strip().lower()
    if not (media == "application/json" or (media.startswith("application/") and media.endswith("+json"))):
        raise UnsupportedMediaType(_CT_MESSAGE)
    try:
        text = body.decode("utf-8")
        doc = _BODY_DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            # Thousands of nested brackets exhaust the decoder's recursion (it would be a 500).
            message = "nested too deeply"
        elif isinstance(exc, json.JSONDecodeError):
            what = "EOF while parsing a value" if not text.strip() else exc.msg
            message = f"{what} at line {exc.lineno} column {exc.colno}"
        else:
            message = str(exc)
        raise RequestError(f"Failed to parse the request body as JSON: {message}") from None
    if not isinstance(doc, dict):
        raise _shape(f"invalid type: {_describe(doc)}, expected struct PredictionRequest")
    if "\\ud" in text or "\\uD" in text:
        # Only a \uD800-\uDFFF escape can put a lone surrogate into a str (the UTF-8 decode
        # above rejects them in raw bytes); such a string cannot be encoded for the worker,
        # a file name or a header, so it is refused here, before anything is reserved.
        where = _find_surrogate(doc, "")
        if where is not None:
            raise RequestError(f"Invalid request body: {where} contains a lone UTF-16 surrogate "
                               "(an unpaired \\ud800-\\udfff escape), which is not valid Unicode")
    req = PredictionRequest()
    if doc.get("id") is not None:
        if not isinstance(doc["id"], str):
            raise _shape(f"id: invalid type: {_describe(doc['id'])}, expected a string")
        req.id = check_id(doc["id"], settings)
    req.input = {} if doc.get("input") is None else doc["input"]
    context = doc.get("context")
    if context is not None:
        if not isinstance(context, dict):
            raise _shape(f"context: invalid type: {_describe(context)}, expected a map")
        for k, v in context.items():
            if not isinstance(v, str):
                raise _shape(f"context.{k}: invalid type: {_describe(v)}, expected a string")
        req.context = dict(context)
    webhook = doc.get("webhook")
    if webhook is not None:
        if not isinstance(webhook, str):
            raise _shape(f"webhook: invalid type: {_describe(webhook)}, expected a string")
        req.webhook = webhook
    events = doc.get("webhook_events_filter")
    if events is not None:
        if not isinstance(events, list):
            raise _shape(f"webhook_events_filter: invalid type: {_describe(events)}, expected a sequence")
        for i, e in enumerate(events):
            if not isinstance(e, str) or e not in WEBHOOK_EVENTS:
                shown = f"unknown variant `{e}`" if isinstance(e, str) else f"invalid type: {_describe(e)}"
                raise _shape(f"webhook_events_filter[{i}]: {shown}, expected one of "
                             + ", ".join(f"`{n}`" for n in WEBHOOK_EVENTS))
        req.events_filter = list(events)
    return req


def parse_prefer(values: list[str]) -> dict[str, Optional[str]]:
    """RFC 7240 ``Prefer`` header(s) → {preference name (lower case): value or None}.

    Preferences are comma-separated, each ``token [= value] *( ; param )``; the
    first occurrence of a name wins (RFC 7240 section 2); quoted values are unquoted.
    """
    prefs: dict[str, Optional[str]] = {}
    for header in values:
        for item in _split_outside_quotes(header, ","):
            head = _split_outside_quotes(item, ";")[0].strip()
            if not head:
                continue
            name, eq, value = head.partition("=")
            name = name.strip().lower()
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            prefs.setdefault(name, value if eq else None)
    return prefs


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, buf, quoted = [], [], False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def wants_event_stream(accept_values: list[str]) -> bool:
    """True if any ``Accept`` media range is ``text/event-stream`` (parameters ignored)."""
    for header in accept_values:
        for item in header.split(","):
            if item.split(";", 1)[0].strip().lower() == "text/event-stream":
                return True
    return False


class App(Protocol):
    """What the HTTP layer needs from the service (see :mod:`minicog.server.service`)."""

    settings: Settings

    def discovery(self) -> dict: ...
    def health(self) -> dict: ...
    def openapi(self) -> Optional[dict]: ...
    def metrics_text(self) -> Optional[str]: ...
    def call_later(self, delay: float, fn: Any) -> Any: ...
    def request_shutdown(self) -> None: ...
    def streaming_supported(self, kind: str) -> bool: ...
    def find_inflight(self, prediction_id: str) -> Any: ...
    def find(self, prediction_id: str) -> Any:
        """The record in flight or finished and still retained with this id, or None."""
    def create(self, kind: str, req: PredictionRequest, *, sse: bool, headers: dict[str, str], put: bool,
               deadline: Optional[float] = None, since: Optional[float] = None,
               wait: bool = False) -> tuple[Any, bool]:
        """The new record (created=True, with a reference held for the caller to release) or the one in flight."""
    def cancel(self, prediction_id: str) -> bool: ...
    def idle(self) -> bool:
        """True while no prediction runs (a hint: see :meth:`HTTPServer.may_spin`)."""


class Headers:
    """Request headers: case-insensitive names, repeated names kept in order.

    The subset of :class:`email.message.Message` that request handlers use
    (``get``, ``get_all``, ``[]``, ``in``, ``items``), without its parser.
    """

    __slots__ = ("_map", "_items", "_last")

    def __init__(self) -> None:
        self._map: dict[str, list[str]] = {}
        self._items: list[list[str]] = []
        self._last: Optional[list[str]] = None

    def add(self, name: str, value: str) -> None:
        pair = [name, value]
        self._items.append(pair)
        self._map.setdefault(name.lower(), []).append(value)
        self._last = pair

    def _extend(self, more: str) -> None:
        assert self._last is not None
        name, value = self._last
        values = self._map[name.lower()]
        values[-1] = self._last[1] = f"{value} {more}" if value else more

    def get(self, name: str, default: Any = None) -> Any:
        values = self._map.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str, failobj: Any = None) -> Any:
        values = self._map.get(name.lower())
        return list(values) if values else failobj

    def __getitem__(self, name: str) -> Optional[str]:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def items(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self._items]

    def keys(self) -> list[str]:
        return [k for k, _ in self._items]

    def __iter__(self) -> Any:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __str__(self) -> str:
        return "".join(f"{k}: {v}\r\n" for k, v in self._items) + "\r\n"


class HTTPServer(ConnectionServer):
    """HTTP/1.1 server bound to an app: connections in a selector, requests on a bounded
    pool (see :mod:`minicog.server.connections`), each parsed and answered by a
    :class:`Handler` kept per connection."""

    def __init__(self, address: tuple[str, int], app: App, settings: Settings):
        self.app = app
        self._slot_waiters: collections.deque = collections.deque()
        self._waiters_lock = threading.Lock()
        super().__init__(address, settings, self._handle_connection)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), port

    # ------------------------------------------------------------- waiting for a slot
    def add_slot_waiter(self, waiter: tuple, *, front: bool = False) -> None:
        """Queue a request parked for a slot: (deadline, callback that resumes it)."""
        with self._waiters_lock:
            if front:
                self._slot_waiters.appendleft(waiter)
            else:
                self._slot_waiters.append(waiter)

    def drop_slot_waiter(self, waiter: tuple) -> None:
        with self._waiters_lock:
            try:
                self._slot_waiters.remove(waiter)
            except ValueError:
                return  # already resumed
        waiter[1]()  # its connection is gone: the resumed request just closes it

    def may_spin(self) -> bool:
        # A running prediction needs the CPU a spinning thread would take (a 409 flood's
        # requests come back quickly but hand the CPU to the model while they wait).
        return self.app.idle()

    def slot_freed(self, *_: Any) -> None:
        """A prediction ended (its slot is free): resume the oldest request waiting for one."""
        with self._waiters_lock:
            waiter = self._slot_waiters.popleft() if self._slot_waiters else None
        if waiter is not None:
            waiter[1]()

    def on_sweep(self, now: float) -> None:
        # Requests past their deadline resume (and are answered 409).  The oldest one is
        # also retried once per sweep, in case a slot freed just before it was queued.
        with self._waiters_lock:
            due = [w for w in self._slot_waiters if w[0] <= now]
            for w in due:
                self._slot_waiters.remove(w)
            if not due and self._slot_waiters:
                due.append(self._slot_waiters.popleft())
        for w in due:
            w[1]()

    def _handle_connection(self, conn: Connection) -> None:
        handler = conn.handler
        if handler is None:
            handler = conn.handler = Handler(conn, self)
        handler.rfile = RequestReader(conn.sock, conn.buf)
        handler.run()


_ROUTES = {
    "/": {"GET": "root"},
    "/health-check": {"GET": "health"},
    "/openapi.json": {"GET": "openapi"},
    "/metrics": {"GET": "metrics"},
    "/shutdown": {"POST": "shutdown"},
    "/predictions": {"POST": "create"},
    "/trainings": {"POST": "create"},
}


class Handler(http.server.BaseHTTPRequestHandler):
    """One connection's requests, each run on a pool thread by :meth:`run`.

    Built without :class:`socketserver.BaseRequestHandler`'s constructor (which would
    serve the whole connection on the calling thread); ``rfile`` is set per request
    to the bytes the selector buffered.
    """

    protocol_version = "HTTP/1.1"
    # Never answer in HTTP/0.9 (a bare body without status line): even a garbled
    # request line gets a status line and a JSON error.
    default_request_version = "HTTP/1.0"
    # Small responses go out as one write; without TCP_NODELAY a header/body split
    # would meet the client's delayed ACK and cost 40 ms per request.
    disable_nagle_algorithm = True
    server_version = f"minicog/{__version__}"
    sys_version = ""
    server: HTTPServer

    # ------------------------------------------------------------- plumbing
    def __init__(self, conn: Connection, server: HTTPServer):
        self.conn = conn
        self.server = server
        self.request = self.connection = conn.sock
        self.client_address = conn.address
        self.timeout = server.settings.read_timeout
        self.wfile = SocketWriter(conn.sock)
        self.rfile = RequestReader(conn.sock, conn.buf)
        self.close_connection = True
        self._responded = False
        self._peek_ok = True
        self._parked = False
        self._server_header = f"Server: {self.version_string()}\r\n".encode("latin-1")
        # Held by the thread answering a request and by the thread that resumes it after a
        # park.  A park can be ended (a slot frees, the prediction ends) before the parking
        # thread has left run(): without the lock both threads touched this handler at once
        # and the connection could be handed back twice (seen as a request never answered).
        self._run_lock = threading.Lock()

    def run(self) -> None:
        """Answer the request in the buffer, then hand the connection back (or park it)."""
        with self._run_lock:
            self._responded = False
            self._peek_ok = True
            self._parked = False
            self._slot_deadline: Optional[float] = None
            self._arrived: Optional[float] = None
            self.close_connection = True
            self.handle_one_request()
            if not self._parked:
                self._finish_request()

    def _finish_request(self) -> None:
        self.server.done(self.conn, not self.close_connection, self.rfile.remaining())

    def version_string(self) -> str:
        return self.server_version  # http.server appends sys_version after a space, even when empty

    def log_message(self, format: str, *args: Any) -> None:  # route http.server's chatter to logging
        log.debug("%s %s", self.address_string(), format % args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        log.debug('"%s" %s', getattr(self, "requestline", ""), code)

    def handle_one_request(self) -> None:
        """http.server's loop step, with a limit on the request line plus headers (→ 431)."""
        limit = self.server.settings.max_header_bytes
        try:
            head = self.rfile.head_lines(limit)  # the usual case: the whole head is buffered
            if head is not None:
                self.raw_requestline = head[0]
                # Header lines without their CRLF, decoded in one call.
                texts = b"\n".join(head[1:]).decode("iso-8859-1").split("\n") if len(head) > 1 else []
            else:
                lines = self._read_head(limit)
                if lines is None:
                    return
                texts = [raw.decode("iso-8859-1").rstrip("\r\n") for raw in lines]
            ok = self._parse_head(texts)
            if not ok:
                return
            self._responded = False
            self._dispatch()
            self.wfile.flush()
        except (TimeoutError, socket.timeout):
            self.close_connection = True
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True

    def _read_head(self, limit: int) -> Optional[list[bytes]]:
        """Read the request line and header lines one by one; None once answered or closed."""
        self.raw_requestline = self.rfile.readline(limit + 1)
        if not self.raw_requestline:
            self.close_connection = True
            return None
        if len(self.raw_requestline) > limit:
            self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
            self.send_error(431, "Request header fields too large")
            self.close_connection = True
            return None
        lines = []
        used = len(self.raw_requestline)
        while True:
            line = self.rfile.readline(limit - used + 1)
            used += len(line)
            if used > limit:
                self.requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
                self.request_version, self.command = "HTTP/1.1", ""
                self.send_error(431, "Request header fields too large")
                self.close_connection = True
                return None
            if line in (b"\r\n", b"\n", b""):
                return lines
            lines.append(line)

    def _parse_head(self, lines: list[str]) -> bool:
        """The request line and header *lines* (decoded, without line ends), as
        http.server's ``parse_request`` reads them.

        Same outcomes (400 for a malformed request line, 505 for HTTP/2+, HTTP/0.9
        only for GET, ``Connection`` and ``Expect: 100-continue`` handling), but the
        headers go into a plain :class:`Headers` map instead of through
        :mod:`email.parser`, which cost more than the rest of a null request's parsing.
        """
        self.command = None
        self.request_version = version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                major, minor = version[5:].split(".")
                if not (major.isdigit() and minor.isdigit() and len(major) <= 10 and len(minor) <= 10):
                    raise ValueError
                number = (int(major), int(minor))
            except ValueError:
                self.send_error(400, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if number >= (2, 0) or number < (1, 0):
                # HTTP/0.9 has no status line and no headers to carry a JSON error; the
                # answer is in HTTP/1.0 framing, which any client can read.
                self.close_connection = True
                self.send_error(505, f"Invalid HTTP version ({version})")
                return False
            self.request_version = version
        if len(words) == 2:
            # An HTTP/0.9 request line ("GET /"): answered as HTTP/1.0, never as 0.9.
            self.send_error(400, f"Bad request syntax ({requestline[:100]!r}): HTTP/0.9 requests are not supported")
            return False
        if len(words) != 3:
            self.send_error(400, f"Bad request syntax ({requestline[:100]!r})")
            return False
        command, path = words[:2]
        if path.startswith("//"):
            path = "/" + path.lstrip("/")  # never let '//host/x' look like a network path
        self.command, self.path = command, path
        if len(lines) > _MAX_HEADERS:
            self.send_error(431, "Too many headers")
            return False
        headers = Headers()
        for text in lines:
            if text[:1] in (" ", "\t") and headers._last is not None:
                headers._extend(text.strip())  # obsolete line folding
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                self.send_error(400, f"Bad header line ({text[:100]!r})")
                return False
            headers.add(name, value.strip())
        self.headers = headers
        conntype = (headers.get("Connection") or "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = (headers.get("Expect") or "").lower()
        if expect == "100-continue" and self.protocol_version >= "HTTP/1.1" and self.request_version >= "HTTP/1.1":
            if not self.handle_expect_100():
                return False
        return True

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """Every error, including http.server's own, as a JSON body."""
        try:
            short = self.responses.get(code, ("Error",))[0]
        except Exception:
            short = "Error"
        # http.server calls this only when the request itself could not be parsed, so
        # its framing is unknown: answer and close.
        self.close_connection = True
        headers = {"Connection": "close"}
        self._send_json(code, {"error": message or short}, headers)

    def _send_json(self, status: int, obj: Any, headers: Optional[dict[str, str]] = None) -> None:
        body = render_json(obj)
        self._send_body(status, body, "application/json", headers)

    def _send_body(self, status: int, body: Body, content_type: str, headers: Optional[dict[str, str]] = None) -> None:
        # The head http.server's send_response/send_header would write (status line, Server,
        # Date, then ours, with its handling of a Connection header), built directly.
        self.log_request(status)
        head = [_status_line(status), self._server_header, _date_header(),
                f"Content-Type: {content_type}\r\nContent-Length: {body.length}\r\n".encode("latin-1")]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}\r\n".encode("latin-1", "strict"))
            if k.lower() == "connection":
                if v.lower() == "close":
                    self.close_connection = True
                elif v.lower() == "keep-alive":
                    self.close_connection = False
        if self.close_connection and not (headers and "Connection" in headers):
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        self._responded = True
        if self.command == "HEAD":
            self.wfile.write(b"".join(head))
            return
        if not body.has_files and body.length <= 65536:
            # Headers and a small body in one send (see disable_nagle_algorithm).
            head.extend(body.parts)
            self.wfile.write(b"".join(head))
            return
        self.wfile.write(b"".join(head))
        try:
            for chunk in body.chunks():
                self.wfile.write(chunk)
        except MinicogError:
            # A file output vanished or changed after the headers went out: the only
            # honest thing left is to cut the connection (the length will not match).
            log.exception("response body could not be completed; closing the connection")
            self.close_connection = True
            raise ConnectionAbortedError("response body incomplete")

    def _error(self, exc: MinicogError) -> None:
        headers = {}
        if isinstance(exc, (AtCapacity, ServiceUnavailable)):
            headers["Retry-After"] = str(self.server.settings.retry_after)
        if isinstance(exc, (PayloadTooLarge, HeaderTooLarge)):
            headers["Connection"] = "close"
            self.close_connection = True
        self._send_json(exc.http_status, exc.body(), headers)

    def _header_values(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []

    # ------------------------------------------------------------- bodies
    def _read_body(self) -> bytes:
        limit = self.server.settings.max_body_bytes
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te:
            # RFC 9112 6.1: chunked must be the last coding, else the body's end is unknown.
            if te.rsplit(",", 1)[-1].strip() != "chunked":
                self.close_connection = True
                raise RequestError(f"Unsupported Transfer-Encoding: {te!r} (only chunked bodies are accepted)")
            return self._read_chunked(limit)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            # Digits only (no sign), and repeated Content-Length headers must agree (RFC 9112
            # 6.3): anything else could frame the body differently from a proxy in front.
            if not (raw.isascii() and raw.isdigit()) or len(set(self.headers.get_all("Content-Length"))) > 1:
                raise ValueError
            length = int(raw)
        except ValueError:
            self.close_connection = True
            raise RequestError(f"Invalid Content-Length: {raw!r}") from None
        if length > limit:
            self.close_connection = True
            raise PayloadTooLarge(f"Request body of {length} bytes exceeds the limit of {limit} bytes")
        data = self.rfile.read(length)
        if len(data) < length:
            self.close_connection = True
            raise RequestError("Request body shorter than its Content-Length")
        return data

    def _read_chunked(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            digits = line.split(b";", 1)[0].strip()
            try:
                # Hex digits only: int() would also take "-1" (read(-1) = read to EOF, unbounded),
                # "+a", "0x1f" or "1_0".
                if not digits or digits.lstrip(b"0123456789abcdefABCDEF"):
                    raise ValueError
                size = int(digits, 16)
            except ValueError:
                self.close_connection = True
                raise RequestError("Malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            if len(out) + size > limit:
                self.close_connection = True
                raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
            out += self.rfile.read(size)
            self.rfile.readline(1024)

    # ------------------------------------------------------------- routing
    def _route(self, path: str) -> tuple[dict[str, str], dict[str, str]]:
        """(method → action, path parameters) for *path*, or ({}, {}) if unknown."""
        if path == "/docs" or path.startswith("/docs/"):
            # The browser page (minicog.server.docs routes within /docs itself).
            return (dict.fromkeys(("GET", "PUT", "POST", "DELETE", "PATCH"), "docs") if self.server.settings.docs
                    else {}), {"path": path}
        if path in _ROUTES:
            kind = "training" if path == "/trainings" else "prediction"
            return _ROUTES[path], {"kind": kind}
        parts = path.split("/")
        if len(parts) in (3, 4) and parts[1] in ("predictions", "trainings") and parts[2]:
            kind = "training" if parts[1] == "trainings" else "prediction"
            pid = urllib.parse.unquote(parts[2])
            if len(parts) == 3:
                return {"PUT": "create", "GET": "get"}, {"kind": kind, "id": pid}
            if parts[3] == "cancel":
                return {"POST": "cancel"}, {"kind": kind, "id": pid}
        return {}, {}

    def _dispatch(self) -> None:
        path = urllib.parse.urlsplit(self.path).path or "/"
        self._answer_errors(lambda: self._route_and_run(path))

    def _route_and_run(self, path: str) -> None:
        # Read any body first so keep-alive framing stays right whatever we answer.
        body = self._read_body() if self.command in ("POST", "PUT", "PATCH", "DELETE") or \
            self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding") else b""
        methods, params = self._route(path)
        if not methods:
            self._send_json(404, {"error": f"Not found: {path}"})
            return
        action = methods.get(self.command)
        if action is None and self.command == "HEAD":
            action = methods.get("GET")  # as axum does: a GET route answers HEAD, without the body
        if action is None:
            self._send_json(405, {"error": f"Method {self.command} not allowed on {path}"},
                            {"Allow": ", ".join(sorted(methods))})
            return
        getattr(self, "_do_" + action)(params, body)

    # ------------------------------------------------------------- routes
    def _do_root(self, params: dict, body: bytes) -> None:
        if self.server.settings.docs and docs.prefers_html(self._header_values("Accept")):
            docs.send_root_html(self, self.server.app.discovery())
            return
        self._send_json(200, self.server.app.discovery())

    def _do_docs(self, params: dict, body: bytes) -> None:
        docs.handle(self, params["path"], body)

    def _do_health(self, params: dict, body: bytes) -> None:
        self._send_json(200, self.server.app.health())

    def _do_openapi(self, params: dict, body: bytes) -> None:
        doc = self.server.app.openapi()
        if doc is None:
            self._send_json(503, {"error": "OpenAPI schema not available"},
                            {"Retry-After": str(self.server.settings.retry_after)})
        else:
            self._send_json(200, doc)

    def _do_metrics(self, params: dict, body: bytes) -> None:
        text = self.server.app.metrics_text()
        if text is None:
            self._send_json(404, {"error": "Not found: /metrics (metrics are turned off)"})
        else:
            self._send_body(200, Body([text.encode("utf-8")]), METRICS_CONTENT_TYPE)

    def _do_shutdown(self, params: dict, body: bytes) -> None:
        self._send_json(200, {})
        self.server.app.request_shutdown()

    def _do_cancel(self, params: dict, body: bytes) -> None:
        pid = check_id(params["id"], self.server.settings)
        if self.server.app.cancel(pid):
            self._send_json(200, {})
        else:
            # Cog answers 404 with {}; the status stays, the body says why (every error is JSON
            # with a reason).  Finished predictions cannot be canceled either.
            self._send_json(404, {"error": f"No {params['kind']} with id {pid!r} is running: "
                                           "it is unknown or already finished"})

    def _do_get(self, params: dict, body: bytes) -> None:
        """GET /predictions/{id} (or /trainings/{id}): the current or final state, with its input.

        With ``Accept: text/event-stream`` it attaches to the prediction's SSE stream
        instead (replayed from its start, or after ``Last-Event-ID``), like a ``PUT`` of
        the id with that header, but a GET never starts a prediction: an unknown id is a
        404, where the PUT would run the model with the body's input.  As with the PUT,
        a reader going away cancels only a prediction that an SSE request created, and
        only once its last reader is gone.
        """
        pid = check_id(params["id"], self.server.settings)
        sse = wants_event_stream(self._header_values("Accept"))
        if sse and not self.server.app.streaming_supported(params["kind"]):
            raise NotAcceptable(_TRAIN_406 if params["kind"] == "training" else _STREAM_406)
        pred = self.server.app.find(pid)
        if pred is None:
            raise NotFound(f"No {params['kind']} with id {pid!r}: it is unknown, or finished more than "
                           f"{self.server.settings.retention_seconds:g}s ago (MINICOG_RETENTION_SECONDS)")
        held = pred.retain()
        try:
            if sse:
                self._stream(pred, held)
                return
            self._send_snapshot(200, pred, held, with_input=True)
        finally:
            if held:
                pred.release()

    def _do_create(self, params: dict, body: bytes) -> None:
        app, settings = self.server.app, self.server.settings
        kind = params["kind"]
        url_id = params.get("id")
        if url_id is not None:
            check_id(url_id, settings)
        sse = wants_event_stream(self._header_values("Accept"))
        if sse and not app.streaming_supported(kind):
            raise NotAcceptable(_TRAIN_406 if kind == "training" else _STREAM_406)
        req = parse_prediction_request(self.headers.get("Content-Type"), body, settings)
        if url_id is not None:
            if req.id is not None and req.id != url_id:
                raise InputValidationError([{"loc": ["body", "id"], "msg": "prediction ID must match the ID supplied in the URL",
                                             "type": "value_error"}])
            req.id = url_id
        prefer = parse_prefer(self._header_values("Prefer"))
        # Both checked before anything starts: a malformed value is a 400 naming its header.
        deadline = cancel_after(self._header_values("Cancel-After"))
        wait = prefer_wait(prefer)
        forwarded = {k: v for k in ("traceparent", "tracestate") if (v := self.headers.get(k))}
        if self._arrived is None:
            self._arrived = time.monotonic()  # a deadline counts from the request, not from a retry
        try:
            # A sync answer is waited for by this thread (_respond_sync), which then reads
            # the run's answer itself.
            pred, created = app.create(kind, req, sse=sse, headers=forwarded, put=url_id is not None,
                                       deadline=deadline, since=self._arrived,
                                       wait=sse or "respond-async" not in prefer)
        except AtCapacity:
            if self._wait_for_slot(params, body):
                return
            raise
        if created:
            # Whatever way it is answered, its end frees a slot a waiting request may take.
            pred.add_done_callback(self.server.slot_freed)
        # A new record comes with a reference taken for us before it was submitted (a
        # fast model could otherwise end and release its files before we retain them);
        # an existing one may have been released already.
        held = created or pred.retain()
        parked = False
        try:
            if sse:
                self._stream(pred, held)
            elif not created:
                # PUT with the id of a prediction in flight (202) or finished and retained
                # (200): its state, never a second run.
                self._send_snapshot(200 if pred.is_terminal else 202, pred, held, with_input=True)
            elif "respond-async" in prefer:
                self._send_json(202, {"id": pred.id, "status": "starting"}, {"Preference-Applied": "respond-async"})
            else:
                self._respond_sync(pred, wait)
                parked = True  # the reference goes with the wait and is released after the answer
        finally:
            if held and not parked:
                pred.release()

    def _wait_for_slot(self, params: dict, body: bytes) -> bool:
        """All slots busy: park this request for a slot (True), or let it be answered 409 (False).

        The request waits, without a thread, up to ``Settings.slot_wait`` seconds in all;
        each prediction's end retries the oldest waiter.  A client flooding a busy
        server with requests would otherwise get 409s as fast as it can send, and both
        sides' work on them takes the CPU the running predictions need.
        """
        wait = self.server.settings.slot_wait
        now = time.monotonic()
        if wait <= 0:
            return False
        first = self._slot_deadline is None
        if first:
            self._slot_deadline = now + wait
        elif now >= self._slot_deadline:
            return False
        server = self.server
        waiter: list = []

        def on_done() -> None:
            with self._run_lock:  # the parking thread may still be on its way out of run()
                if self.conn.gone:
                    self.close_connection = True
                    self._finish_request()
                    return
                self._parked = False
                self._answer_errors(lambda: self._do_create(params, body))
                if not self._parked:
                    self._finish_request()

        def on_gone() -> None:
            # The hang-up can be seen before the entry is queued (just below); it is then
            # resumed by its deadline or a free slot and finds the connection gone.
            if waiter:
                server.drop_slot_waiter(waiter[0])

        self._parked = True
        finish = server.park(self.conn, on_done, on_gone)
        waiter.append((self._slot_deadline, finish))
        server.add_slot_waiter(waiter[0], front=not first)
        return True

    def _answer_errors(self, fn: Any) -> None:
        """Run *fn* (a route, first or resumed after a wait) and answer its errors as JSON."""
        try:
            fn()
        except MinicogError as exc:
            if self._responded:
                self.close_connection = True
                return
            self._error(exc)
        except (ConnectionError, TimeoutError, socket.timeout):
            self.close_connection = True
        except Exception:
            log.exception("error handling %s %s", self.command, self.path)
            self.close_connection = True
            if not self._responded:
                self._send_json(500, {"error": "Internal server error (see the server log)"})

    def _send_snapshot(self, status: int, pred: Any, held: bool, *, with_input: bool = False) -> None:
        snap = pred.snapshot(with_input=with_input)
        if not held:
            # Finished and its files released between lookup and now: answer what is left.
            snap.pop("output", None)
        self._send_json(status, snap)

    # ------------------------------------------------------------- waiting
    def _client_gone(self) -> bool:
        """True if the peer closed its end (checked while an SSE stream waits for events)."""
        if not self._peek_ok:
            return False
        state = peer_state(self.connection)
        if state == "data":
            # The client already sent its next request (pipelining); it is still there,
            # and we stop peeking so the bytes stay for the next request.
            self._peek_ok = False
            return False
        return state == "closed"

    def _respond_sync(self, pred: Any, wait: Optional[float] = None) -> None:
        """Answer *pred* when it ends, without holding a thread meanwhile.

        The caller's reference on its files comes with the wait and is released once
        the answer is written.  The connection is parked: the selector watches it (a
        hang-up cancels the prediction) and the prediction's end queues the answer at
        the front of the pool's queue.  A prediction that ends within
        ``Settings.sync_inline_wait`` is answered by this thread instead, which reads
        the run's answer itself (:meth:`Prediction.wait`): three thread hand-offs
        fewer (engine I/O thread, selector, pool) for fast models.  With *wait*
        (``Prefer: wait=N``) a timer ends the wait after N seconds: the answer is then
        202 with the prediction as it is, and the prediction goes on.
        """
        server = self.server
        budget = server.settings.sync_inline_wait
        if wait is not None:
            budget = min(budget, wait)
        # Waited for even with no budget: a record created for a sync answer expects it
        # (see Engine.submit's *wait*), and one that is already over is answered now.
        # The end's bookkeeping (console line, done callbacks, metrics) is done after the
        # answer, off the latency (not ended yet: whatever ends it does it then).
        pred.defer_end_work()
        try:
            ended = pred.wait(max(0.0, budget))
            if ended:
                try:
                    self._send_json(200, pred.snapshot())
                except (ConnectionError, TimeoutError, socket.timeout):
                    self.close_connection = True
                finally:
                    pred.end_work_now()  # before the release: it keeps the record for reads
                    pred.release()
        finally:
            pred.end_work_now()
        if ended:
            return

        def on_done() -> None:
            with self._run_lock:  # the parking thread may still be on its way out of run()
                answer()

        def answer() -> None:
            try:
                if self.conn.gone:
                    self.close_connection = True
                elif not pred.is_terminal:
                    self._send_json(202, pred.snapshot(), {"Preference-Applied": f"wait={int(wait or 0)}"})
                else:
                    pred.wait()  # terminal already; this makes its terminal webhook durable (outbox)
                    self._send_json(200, pred.snapshot())
            except (ConnectionError, TimeoutError, socket.timeout):
                self.close_connection = True
            except Exception:
                log.exception("answering %s %s failed", pred.kind, pred.id)
                self.close_connection = True
            finally:
                pred.release()
            self._finish_request()

        def on_gone() -> None:
            log.info("client of %s %s disconnected; canceling", pred.kind, pred.id)
            server.app.cancel(pred.id)

        self._parked = True
        finish = server.park(self.conn, on_done, on_gone)
        if wait is None:
            pred.add_done_callback(finish)
            return
        # Two events may end the wait (the end, the timer): the first one only.
        once = threading.Lock()
        timer = None

        def end_once(*_: Any) -> None:
            if once.acquire(blocking=False):
                if timer is not None:
                    timer.cancel()
                finish()

        timer = server.app.call_later(wait, end_once)
        pred.add_done_callback(end_once)

    def _write_events(self, events: list, head: bool = False) -> None:
        """Write *events* as few HTTP chunks as possible (one per ~64 KiB of text).

        *head*: the response head is still buffered and leaves with the first chunk.
        Until a stream's first ``output`` event is out, that event ends its chunk: the
        first token never waits for the rest of a large batch to be encoded.
        """
        prefix = b"".join(self._headers_buffer) if head else b""
        if head:
            self._headers_buffer = []
        parts: list = [prefix] if prefix else []
        size = 0
        for event in events:
            body = encode_event(event)
            if body.has_files:
                # A file output inlined as a data: URI streams from disk in its own chunk.
                if parts:
                    self._write_chunk(parts, size)
                    parts, size = [], 0
                self.wfile.write(b"%x\r\n" % body.length)
                for piece in body.chunks():
                    self.wfile.write(piece)
                self.wfile.write(b"\r\n")
                self._first_output_sent = True
                continue
            if not parts:
                parts.append(b"")  # where the chunk-size line goes
            parts.extend(body.parts)
            size += body.length
            if size >= _SSE_CHUNK_BYTES or (event.name == "output" and not self._first_output_sent):
                self._first_output_sent = True
                self._write_chunk(parts, size)
                parts, size = [], 0
        if parts:
            self._write_chunk(parts, size)

    def _write_chunk(self, parts: list, size: int) -> None:
        """Send *parts*: an optional prefix (the head) at parts[0], then *size* bytes of chunk data."""
        if size:
            parts[0] += b"%x\r\n" % size
            parts.append(b"\r\n")
        self.wfile.write(b"".join(parts))

    def _stream(self, pred: Any, held: bool) -> None:
        """Write *pred*'s events as SSE; *held*: the caller holds a reference on its files."""
        if not held:
            raise ServiceUnavailable("Prediction stream unavailable")
        settings = self.server.settings
        last = self.headers.get("Last-Event-ID")
        try:
            last_id = int(last) if last is not None and last.strip() else None
        except ValueError:
            last_id = None
        sub, pred.creator_reader = pred.creator_reader, None
        # The request that created the run reads its worker's messages itself until the
        # first token is out (Run.read_until): no hand-off from a busy I/O thread.
        run = pred.run if sub is not None else None
        if sub is None:
            sub = pred.events.subscribe(last_event_id=last_id)
        # A stream lives as long as the prediction: its thread leaves the pool, so streams
        # never use up the threads that answer other requests.
        self.server.pool.detach()
        gone = False
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Accel-Buffering", "no")
            self._headers_buffer.append(b"\r\n")  # end_headers() without its flush
            self._responded = True
            self._first_output_sent = False
            # The head waits a moment for the first token (read on this thread, as below)
            # and leaves with it: one write, and the client wakes once for both (each
            # wake-up of an idle client costs 100-300 us on a VM whose idle CPUs halt).
            if run is not None and not pred.uploading:
                run.read_until(lambda: pred.has_output or pred.uploading, settings.sync_inline_wait)
            events = sub.get_batch(timeout=0, max_events=_SSE_BATCH_EVENTS)
            if events:
                self._write_events(events, head=True)
            else:
                self.flush_headers()
            poll = settings.disconnect_poll_interval
            keepalive = settings.sse_keepalive_interval
            quiet_since = time.monotonic()
            while True:
                # Everything the reader is behind goes out at once: a batch costs one
                # chunk and one sendall, so the writer keeps up with a fast producer.
                # Not while an upload is in flight: its event comes from the uploader's
                # thread, which would not end a read of the worker's channel.
                if (run is not None and not self._first_output_sent and not pred.uploading
                        and run.read_until(lambda: sub.ready() or pred.uploading, poll)):
                    events = sub.get_batch(timeout=0, max_events=_SSE_BATCH_EVENTS)
                else:
                    events = sub.get_batch(timeout=poll, max_events=_SSE_BATCH_EVENTS)
                if events:
                    self._write_events(events)
                    quiet_since = time.monotonic()
                    continue
                if sub.done:
                    break
                if self._client_gone():
                    gone = True
                    break
                if time.monotonic() - quiet_since >= keepalive:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(KEEPALIVE), KEEPALIVE))
                    quiet_since = time.monotonic()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (ConnectionError, TimeoutError, socket.timeout, MinicogError):
            gone = True
            self.close_connection = True
        finally:
            if run is not None and not self._first_output_sent:
                run.read_until(_ALWAYS, 0)  # hand the slot back to the I/O thread
            sub.close()
            if gone:
                self.close_connection = True
                if pred.cancel_on_disconnect and not pred.is_terminal and pred.events.subscriber_count == 0:
                    log.info("last SSE reader of %s %s disconnected; canceling", pred.kind, pred.id)
                    self.server.app.cancel(pred.id)
