"""Webhook delivery in the background, with coglet's filter, throttle and retry rules.

A prediction created with a ``webhook`` URL gets a :class:`WebhookSender`.  The
prediction record calls :meth:`WebhookSender.send` on each transition (``start``,
``output``, ``logs``, ``completed``); the call only decides whether the event is
sent (``webhook_events_filter``, and the throttle: a non-terminal ``start``/``logs``
event is dropped unless ``Settings.throttle_response_interval`` seconds have passed
since the last webhook sent, ``output`` is never throttled) and queues the
payload.  One daemon thread per sender POSTs the queue in order, so:

* a dead or slow receiver never holds a slot, delays a cancel or blocks a
  response: the prediction's threads only append to a list;
* events arrive in order, and when the terminal event is queued any ``output``/
  ``logs`` events still waiting are dropped (the terminal snapshot contains
  everything they carried; a waiting ``start`` is kept), so a slow receiver does
  not make the terminal webhook wait behind a backlog;
* a receiver slower than the model cannot make the queue grow without bound:
  beyond ``Settings.webhook_queue_limit`` waiting events the oldest non-terminal
  one is dropped (each payload is a full snapshot, so nothing is lost but an
  intermediate state).

Only ``http``/``https`` URLs are posted to: the URL comes from the client, and
urllib would otherwise open ``file:`` (``file:///dev/zero`` reads forever),
``ftp:`` or ``data:`` URLs; any other URL is logged and given up at once, never
retried.  A receiver's answer is read up to ``Settings.webhook_max_response_bytes``
(only its status matters), so an endless body cannot hold a sender.

Only the terminal event is retried: on transport errors and on 429/500/502/503/504,
up to ``Settings.webhook_max_retries`` times, waiting
``webhook_backoff_base * 2 ** min(k, webhook_backoff_max_exponent)`` seconds
before retry *k* (0.2 s, 0.4 s ... 102.4 s, Cog's schedule); each attempt is
bounded by ``Settings.webhook_timeout``.  Non-terminal failures are logged and
forgotten, as coglet does.  Delivery never changes the prediction.

Payloads are :class:`~minicog.server.outputs.Body` objects streamed from disk
(a 100 MB file output is not materialised in memory), re-rendered per attempt.

:class:`WebhookDispatcher` (one per service) creates senders and knows which
terminal webhooks are still pending, so a shutdown can wait for them within the
grace period and log the ones it has to give up on (coglet drops them silently).
"""

from __future__ import annotations

import collections
import http.client
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterable, Optional

from minicog._version import __version__
from minicog.console import redact_text, redact_url
from minicog.server.outputs import render_json
from minicog.settings import Settings

__all__ = ["WebhookDispatcher", "WebhookSender", "EVENTS", "RETRY_STATUSES", "USER_AGENT"]

log = logging.getLogger("minicog.webhooks")

EVENTS = ("start", "output", "logs", "completed")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"minicog/{__version__}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook is a POST of a snapshot; following a redirect would turn it into a GET.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


class _NotHTTP(ValueError):
    """The webhook URL is not an http(s) URL: nothing is sent, nothing retried."""


class WebhookSender:
    """Queues and delivers the webhooks of one prediction (see the module docstring)."""

    def __init__(self, dispatcher: "WebhookDispatcher", url: str, prediction_id: str, *,
                 events_filter: Optional[Iterable[str]] = None, headers: Optional[dict[str, str]] = None,
                 on_finished: Optional[Callable[[], None]] = None):
        self.url = url
        self.prediction_id = prediction_id
        self.events = frozenset(EVENTS if events_filter is None else events_filter)
        self._dispatcher = dispatcher
        self._settings = dispatcher.settings
        self._headers = dict(headers or {})
        self._on_finished = on_finished
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque = collections.deque()
        self._last_sent: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self._terminal_queued = False
        self.terminal_delivered: Optional[bool] = None  # None until the terminal send finished
        self._finished = threading.Event()

    def send(self, event: str, payload: Any) -> bool:
        """Queue *payload* for *event*; False if filtered or throttled.

        *payload* is the snapshot dict, or a callable returning it, called only when
        the event is really sent (so throttled log events cost no snapshot).
        """
        terminal = event == "completed"
        if terminal and event not in self.events:
            # Nothing to deliver, but the sender is finished (its reference is released).
            self.close()
            return False
        with self._cond:
            if self._terminal_queued:
                return False
            if event not in self.events:
                return False
            now = time.monotonic()
            if not terminal and event in ("start", "logs") and self._last_sent is not None \
                    and now - self._last_sent < self._settings.throttle_response_interval:
                return False
            if terminal:
                self._terminal_queued = True
                # Superseded by the terminal snapshot; "start" is kept, receivers count on it.
                self._queue = collections.deque(item for item in self._queue if item[1] == "start")
                self._dispatcher._pending_add(self)
            else:
                self._last_sent = now
                while len(self._queue) >= self._settings.webhook_queue_limit:
                    self._queue.popleft()
            self._queue.append((terminal, event, payload() if callable(payload) else payload))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"minicog-webhook-{self.prediction_id}", daemon=True)
                self._thread.start()
            self._cond.notify()
            return True

    def close(self) -> None:
        """The prediction ended without a terminal send (e.g. filtered): release at once."""
        with self._cond:
            first = not self._terminal_queued
            self._terminal_queued = True
        if first:
            self._finish(None)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the terminal webhook was delivered or given up; True if finished."""
        return self._finished.wait(timeout)

    def _finish(self, delivered: Optional[bool]) -> None:
        if self._finished.is_set():
            return
        self.terminal_delivered = delivered
        self._finished.set()
        self._dispatcher._pending_remove(self)
        if self._on_finished is not None:
            try:
                self._on_finished()
            except Exception:
                log.exception("webhook release callback failed")

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                terminal, event, payload = self._queue.popleft()
            if terminal:
                ok = self._deliver_terminal(payload)
                self._finish(ok)
                return
            try:
                status = self._post(payload)
                if not 200 <= status < 300:
                    log.warning("webhook %s for prediction %s answered %s", event, self.prediction_id, status)
            except Exception as exc:
                log.warning("webhook %s for prediction %s failed: %s", event, self.prediction_id,
                            redact_text(exc, self.url))

    def _deliver_terminal(self, payload: Any) -> bool:
        s = self._settings
        for attempt in range(s.webhook_max_retries + 1):
            if attempt:
                delay = s.webhook_backoff_base * 2 ** min(attempt, s.webhook_backoff_max_exponent)
                time.sleep(delay)
            try:
                status = self._post(payload)
            except _NotHTTP as exc:
                log.error("terminal webhook for prediction %s: %s; not retried", self.prediction_id,
                          redact_text(exc, self.url))
                return False
            except Exception as exc:
                log.warning("terminal webhook for prediction %s to %s failed (attempt %d): %s",
                            self.prediction_id, redact_url(self.url), attempt + 1, redact_text(exc, self.url))
                continue
            if 200 <= status < 300:
                return True
            if status not in RETRY_STATUSES:
                log.error("terminal webhook for prediction %s to %s answered %s; not retried",
                          self.prediction_id, redact_url(self.url), status)
                return False
            log.warning("terminal webhook for prediction %s answered %s (attempt %d)", self.prediction_id, status, attempt + 1)
        log.error("terminal webhook for prediction %s to %s not delivered after %d attempts",
                  self.prediction_id, redact_url(self.url), s.webhook_max_retries + 1)
        return False

    def _post(self, payload: Any) -> int:
        if urllib.parse.urlsplit(self.url).scheme.lower() not in ("http", "https"):
            raise _NotHTTP(f"webhook URL {self.url!r} is not an http:// or https:// URL")
        body = render_json(payload)
        headers = {
            "Content-Type": "application/json",
            "Accept": "*/*",
            "User-Agent": USER_AGENT,
            "Content-Length": str(body.length),
        }
        if self._settings.webhook_auth_token:
            headers["Authorization"] = f"Bearer {self._settings.webhook_auth_token}"
        headers.update(self._headers)
        data: Any = body.materialize() if not body.has_files else body.chunks()
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            limit = self._settings.webhook_max_response_bytes
            with _opener.open(request, timeout=self._settings.webhook_timeout) as response:
                response.read(limit)
                return response.status
        except urllib.error.HTTPError as exc:
            try:
                exc.read(limit)
            except (OSError, http.client.HTTPException):
                pass
            exc.close()
            return exc.code


class WebhookDispatcher:
    """Makes senders and tracks terminal webhooks still in flight (for shutdown)."""

    def __init__(self, settings: Optional[Settings] = None):
        self.settings = settings or Settings()
        self._lock = threading.Lock()
        self._pending: set[WebhookSender] = set()

    def sender(self, url: str, prediction_id: str, *, events_filter: Optional[Iterable[str]] = None,
               headers: Optional[dict[str, str]] = None, on_finished: Optional[Callable[[], None]] = None) -> WebhookSender:
        return WebhookSender(self, url, prediction_id, events_filter=events_filter, headers=headers, on_finished=on_finished)

    def _pending_add(self, sender: WebhookSender) -> None:
        with self._lock:
            self._pending.add(sender)

    def _pending_remove(self, sender: WebhookSender) -> None:
        with self._lock:
            self._pending.discard(sender)

    def pending(self) -> list[WebhookSender]:
        """Senders whose terminal webhook is queued or being retried."""
        with self._lock:
            return list(self._pending)

    def flush(self, timeout: float) -> list[WebhookSender]:
        """Wait up to *timeout* seconds for pending terminal webhooks; log and return the rest."""
        deadline = time.monotonic() + timeout
        for sender in self.pending():
            sender.wait(max(0.0, deadline - time.monotonic()))
        left = self.pending()
        for sender in left:
            log.error("shutdown: terminal webhook for prediction %s to %s was not delivered within the grace period",
                      sender.prediction_id, redact_url(sender.url))
        return left
