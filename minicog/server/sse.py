"""Server-sent events of one prediction: numbered history, bounded subscribers.

Every streaming-capable prediction owns an :class:`EventStream`.  The
:class:`~minicog.server.prediction.Prediction` is its only publisher and calls
:meth:`EventStream.publish` on the orchestrator's I/O thread, so publishing must
never block: it appends the event to a bounded history (a ``deque`` with
``Settings.stream_history_capacity`` entries, coglet's replay buffer) and to each
subscriber's own bounded queue, and wakes the subscriber.  The HTTP threads that
write SSE responses are the readers (:meth:`Subscriber.get`).

Design points:

* Events are numbered 1, 2, 3 ... per prediction and the number goes out as the
  SSE ``id:`` field, so a client that reconnects (``PUT /predictions/{id}`` with
  ``Last-Event-ID``) resumes right after the last event it saw instead of
  getting the whole replay again (coglet has no ids).
* A subscriber that is ``Settings.stream_subscriber_queue`` events behind is cut
  off: its queue is dropped and its next read returns coglet's "lagged" error
  event with the number of events it missed, then the end.  A slow reader thus
  costs the publisher one ``len()`` check and never slows the prediction or the
  other readers.
* A subscriber asking for events that were already evicted from the history
  gets coglet's "replay truncated" error (with how many it missed) and the end,
  never a stream with a silent hole.  With capacity 0 there is no history and a
  subscriber sees only live events.
* Error events carry the id of the last event the reader did get, so a client
  that honours ``Last-Event-ID`` still resumes at the right place.
* Event payloads stay Python values (they may hold
  :class:`~minicog.server.outputs.FileOutput` objects) and are encoded when
  written, by :func:`encode_event`, as ``id: N\\nevent: name\\ndata: <json>\\n\\n``.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Iterator, Optional

from minicog.errors import MinicogError
from minicog.server.outputs import Body, render_json

__all__ = ["Event", "EventStream", "Subscriber", "TooManySubscribers", "encode_event", "KEEPALIVE",
           "LAGGED_MESSAGE", "TRUNCATED_MESSAGE"]

KEEPALIVE = b": keep-alive\n\n"
LAGGED_MESSAGE = "SSE stream lagged; events were dropped"
TRUNCATED_MESSAGE = "SSE stream replay truncated; events were dropped"


class TooManySubscribers(MinicogError):
    http_status = 429

    def __init__(self) -> None:
        super().__init__("Too many stream subscribers")


class Event:
    __slots__ = ("id", "name", "data")

    def __init__(self, id: int, name: str, data: Any):
        self.id, self.name, self.data = id, name, data

    def __repr__(self) -> str:
        return f"Event({self.id}, {self.name!r}, {self.data!r})"


def encode_event(event: Event) -> Body:
    """The SSE frame of *event* as a lazily rendered body (file outputs stream from disk)."""
    body = render_json(event.data)
    head = f"id: {event.id}\nevent: {event.name}\ndata: ".encode("utf-8")
    return Body([head, *body.parts, b"\n\n"])


_END = object()


class Subscriber:
    """One reader of an :class:`EventStream`; use :meth:`get` until it returns None with ``done``."""

    def __init__(self, stream: "EventStream", queue_size: int):
        self._stream = stream
        self._queue: collections.deque = collections.deque()
        self._queue_size = queue_size
        self._cond = threading.Condition(threading.Lock())
        self._skipped = 0  # events dropped because this reader lagged
        self._last_id = 0  # id of the last event handed out
        self._pending_error: Optional[Event] = None
        self.done = False

    # Publisher side (called with the stream's lock held; never blocks for long).
    def _push(self, item: Any) -> None:
        with self._cond:
            if self._skipped:
                if item is not _END:
                    self._skipped += 1
                self._cond.notify_all()
                return
            if item is not _END and len(self._queue) >= self._queue_size:
                self._skipped = len(self._queue) + 1
                self._queue.clear()
            else:
                self._queue.append(item)
            self._cond.notify_all()

    def _fail(self, message: str, skipped: int) -> None:
        with self._cond:
            self._pending_error = Event(0, "error", {"error": message, "skipped": skipped})
            self._queue.clear()
            self._cond.notify_all()

    # Reader side.
    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None after *timeout* seconds of silence or at the end (then ``done``)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if self.done:
                    return None
                if self._pending_error is not None:
                    err, self._pending_error = self._pending_error, None
                    err.id = self._last_id
                    self.done = True
                    return err
                if self._skipped:
                    self.done = True
                    return Event(self._last_id, "error", {"error": LAGGED_MESSAGE, "skipped": self._skipped})
                if self._queue:
                    item = self._queue.popleft()
                    if item is _END:
                        self.done = True
                        return None
                    self._last_id = item.id
                    return item
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._cond.wait(left)

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        """Stop reading; the stream forgets this subscriber."""
        with self._cond:
            self.done = True
            self._queue.clear()
        self._stream._unsubscribe(self)


class EventStream:
    """The numbered events of one prediction, with history and live subscribers."""

    def __init__(self, *, history: int = 1024, queue_size: int = 1024, max_subscribers: int = 1024):
        self._lock = threading.Lock()
        self._history: collections.deque = collections.deque(maxlen=history if history > 0 else 0)
        self._capacity = history
        self._queue_size = max(1, queue_size)
        self._max_subscribers = max_subscribers
        self._subscribers: list[Subscriber] = []
        self._next_id = 1
        self._closed = False
        self.ever_subscribed = False

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, name: str, data: Any) -> Optional[Event]:
        """Number *data* as the next event, keep it, and hand it to every subscriber."""
        with self._lock:
            if self._closed:
                return None
            event = Event(self._next_id, name, data)
            self._next_id += 1
            if self._capacity > 0:
                self._history.append(event)
            for sub in self._subscribers:
                sub._push(event)
            return event

    def close(self) -> None:
        """No more events: subscribers end after reading what they have."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for sub in self._subscribers:
                sub._push(_END)

    def subscribe(self, last_event_id: Optional[int] = None) -> Subscriber:
        """A reader that first replays retained events after *last_event_id*, then live ones.

        Raises :class:`TooManySubscribers` beyond ``max_subscribers``.
        """
        after = max(0, last_event_id or 0)
        with self._lock:
            if len(self._subscribers) >= self._max_subscribers:
                raise TooManySubscribers()
            sub = Subscriber(self, self._queue_size)
            sub._last_id = after
            self.ever_subscribed = True
            if self._capacity > 0:
                first_kept = self._history[0].id if self._history else self._next_id
                missing = max(0, min(first_kept, self._next_id) - (after + 1))
                if missing:
                    sub._fail(TRUNCATED_MESSAGE, missing)
                    return sub
                replay = [event for event in self._history if event.id > after]
                # The replay is not "lag": the reader gets it all, plus the usual slack.
                sub._queue.extend(replay)
                sub._queue_size += len(replay)
            if self._closed:
                sub._push(_END)
            else:
                self._subscribers.append(sub)
            return sub

    def _unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            try:
                self._subscribers.remove(sub)
            except ValueError:
                pass
