"""Server-sent events of one prediction: a numbered event log read through cursors.

Every streaming-capable prediction owns an :class:`EventStream`.  The
:class:`~minicog.server.prediction.Prediction` is its only publisher and calls
:meth:`EventStream.publish` on the engine's I/O thread, so publishing must
never block: it appends the event to one bounded log (a ``deque`` holding the
larger of ``Settings.stream_history_capacity``, coglet's replay buffer, and
``Settings.stream_subscriber_queue``, the lag limit) and wakes the readers.  It
does no per-subscriber work at all.  The HTTP threads that write SSE responses
are the readers: each :class:`Subscriber` is a cursor (the id of the last event
it took) into that log, and :meth:`Subscriber.get_batch` hands over everything
it is behind in one call, so a writer that was held up for a moment catches up
with one ``sendall`` instead of one per event.

Design points:

* Events are numbered 1, 2, 3 ... per prediction and the number goes out as the
  SSE ``id:`` field, so a client that reconnects (``PUT /predictions/{id}`` with
  ``Last-Event-ID``) resumes right after the last event it saw instead of
  getting the whole replay again (coglet has no ids).
* A subscriber more than ``Settings.stream_subscriber_queue`` events behind the
  publisher (or whose next event already left the log) is cut off: its next read
  returns coglet's "lagged" error event with the number of events it missed,
  then the end.  The check happens on the reader's side, so a slow reader costs
  the publisher nothing and never slows the prediction or the other readers;
  memory stays bounded by the log's size whatever the readers do (a reader stuck
  in ``sendall`` holds at most one batch of encoded text besides).
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


class Subscriber:
    """One reader of an :class:`EventStream`: a cursor into the stream's event log.

    Use :meth:`get` (one event) or :meth:`get_batch` (everything available) until
    they return None / ``[]`` with ``done`` set.
    """

    def __init__(self, stream: "EventStream", cursor: int, limit: int):
        self._stream = stream
        self._cursor = cursor  # id of the last event consumed (or skipped over, with history 0)
        self._limit = limit  # events this reader may be behind before it is dropped
        self._last_id = cursor  # id of the last event handed out: what error events carry
        self._pending_error: Optional[Event] = None
        self.done = False

    def _fail(self, message: str, skipped: int) -> None:
        self._pending_error = Event(0, "error", {"error": message, "skipped": skipped})

    def _take(self, max_events: Optional[int]) -> Optional[list[Event]]:
        """(stream lock held) Available events, an error, [] at the end, or None if there is nothing yet."""
        stream = self._stream
        if self._pending_error is not None:
            err, self._pending_error = self._pending_error, None
            err.id = self._last_id
            self.done = True
            return [err]
        last = stream._next_id - 1
        behind = last - self._cursor
        if behind > 0:
            log = stream._log
            first = log[0].id if log else stream._next_id
            if behind > self._limit or self._cursor + 1 < first:
                # Too slow: the publisher never waits, so this reader is cut off (coglet's rule).
                self.done = True
                return [Event(self._last_id, "error", {"error": LAGGED_MESSAGE, "skipped": behind})]
            n = behind if max_events is None else min(behind, max_events)
            start = self._cursor + 1 - first
            if start == 0 and n == len(log):
                events = list(log)
            else:
                events = [log[start + i] for i in range(n)]
            self._cursor += n
            self._last_id = self._cursor
            return events
        if stream._closed:
            self.done = True
            return []
        return None

    def ready(self) -> bool:
        """True if a read would return at once (events, an error or the end); a hint, taken without the lock."""
        stream = self._stream
        return self.done or self._pending_error is not None or self._cursor < stream._next_id - 1 or stream._closed

    def get_batch(self, timeout: Optional[float] = None, max_events: Optional[int] = None) -> list[Event]:
        """Every event available (at most *max_events*), waiting up to *timeout* s for one.

        Returns ``[]`` after *timeout* seconds of silence, or at the end (then ``done``).
        """
        if self.done:
            return []
        cond = self._stream._cond
        with cond:
            deadline = None
            while True:
                got = self._take(max_events)
                if got is not None:
                    return got
                if deadline is None:
                    if timeout is None:
                        cond.wait()
                        continue
                    deadline = time.monotonic() + timeout
                    left = timeout
                else:
                    left = deadline - time.monotonic()
                if left <= 0:
                    return []
                cond.wait(left)

    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, or None after *timeout* seconds of silence or at the end (then ``done``)."""
        events = self.get_batch(timeout, 1)
        return events[0] if events else None

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        """Stop reading; the stream forgets this subscriber."""
        self.done = True
        self._stream._unsubscribe(self)


class EventStream:
    """The numbered events of one prediction, with history and live subscribers."""

    def __init__(self, *, history: int = 1024, queue_size: int = 1024, max_subscribers: int = 1024):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._capacity = max(0, history)
        self._lag_limit = max(1, queue_size)
        # One log serves both the replay history and the live readers' cursors, so it
        # keeps whichever window is larger; events older than that are gone for everyone.
        self._log: collections.deque = collections.deque(maxlen=max(self._capacity, self._lag_limit))
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
        """Number *data* as the next event and append it to the log; wake the readers."""
        with self._cond:
            if self._closed:
                return None
            event = Event(self._next_id, name, data)
            self._next_id += 1
            self._log.append(event)
            if self._subscribers:
                self._cond.notify_all()
            return event

    def close(self) -> None:
        """No more events: subscribers end after reading what they have."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()

    def subscribe(self, last_event_id: Optional[int] = None) -> Subscriber:
        """A reader that first replays retained events after *last_event_id*, then live ones.

        Raises :class:`TooManySubscribers` beyond ``max_subscribers``.
        """
        after = max(0, last_event_id or 0)
        with self._lock:
            if len(self._subscribers) >= self._max_subscribers:
                raise TooManySubscribers()
            self.ever_subscribed = True
            last = self._next_id - 1
            if self._capacity > 0:
                # Replay covers the last `capacity` events (the log may hold more for readers).
                first_kept = max(self._log[0].id if self._log else self._next_id, self._next_id - self._capacity)
                missing = max(0, min(first_kept, self._next_id) - (after + 1))
                sub = Subscriber(self, min(after, last), self._lag_limit)
                if missing:
                    sub._fail(TRUNCATED_MESSAGE, missing)
                    sub._last_id = after
                    return sub
                # The replay is not "lag": the reader gets it all, plus the usual slack.
                sub._limit += max(0, last - sub._cursor)
                sub._last_id = after
            else:
                sub = Subscriber(self, last, self._lag_limit)  # live events only
                sub._last_id = after
            self._subscribers.append(sub)
            return sub

    def _unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            try:
                self._subscribers.remove(sub)
            except ValueError:
                pass
