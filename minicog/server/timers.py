"""A timer queue served by a bounded pool of threads: the server's one way to run
something later (webhook retries, prediction deadlines, ``Prefer: wait`` answers).

A waiting entry is a small object in a heap, never a sleeping thread, so 2,000
webhook retries or 2,000 deadlines cost 2,000 objects and at most ``size``
threads.  Threads start when work is due and none is idle, and end after
``idle_timeout`` seconds without work (one stays while entries wait).  An entry
can be canceled (:meth:`Timer.cancel`); canceled entries are dropped from the
heap lazily, and the heap is rebuilt once they outnumber the live ones, so a
server that sets a one-hour deadline on every prediction does not keep an hour
of finished predictions alive.  A callable that raises is logged; the pool goes on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable, Optional

__all__ = ["TimerPool", "Timer"]

log = logging.getLogger("minicog.timers")


class Timer:
    """One scheduled call; :meth:`cancel` keeps it from running (if it has not started)."""

    __slots__ = ("when", "fn", "_pool")

    def __init__(self, when: float, fn: Callable[[], None], pool: "TimerPool"):
        self.when, self.fn, self._pool = when, fn, pool

    def cancel(self) -> None:
        self._pool._cancel(self)

    @property
    def canceled(self) -> bool:
        return self.fn is None


class TimerPool:
    """Runs callables at given ``time.monotonic()`` times on at most *size* threads."""

    def __init__(self, name: str, size: int, idle_timeout: float):
        self.name = name
        self.size = max(1, size)
        self.idle_timeout = idle_timeout
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._canceled = 0  # canceled entries still in the heap
        self._threads = 0
        self._idle = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads alive now (for tests and metrics)."""
        return self._threads

    def __len__(self) -> int:
        """Entries waiting (not canceled)."""
        return len(self._heap) - self._canceled

    def call_soon(self, fn: Callable[[], None]) -> Optional[Timer]:
        return self.call_at(time.monotonic(), fn)

    def call_later(self, delay: float, fn: Callable[[], None]) -> Optional[Timer]:
        return self.call_at(time.monotonic() + delay, fn)

    def call_at(self, when: float, fn: Callable[[], None]) -> Optional[Timer]:
        """Run *fn* at monotonic time *when* (or as soon as a thread is free); None once closed."""
        timer = Timer(when, fn, self)
        with self._cond:
            if self._closed:
                return None
            heapq.heappush(self._heap, (when, next(self._seq), timer))
            if self._idle == 0 and self._threads < self.size:
                self._spawn()
            else:
                self._cond.notify()
        return timer

    def close(self) -> None:
        """Drop what is waiting; threads end after their current call."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._canceled = 0
            self._cond.notify_all()

    def _cancel(self, timer: Timer) -> None:
        with self._cond:
            if timer.fn is None:
                return
            timer.fn = None  # the callable (and what it holds) is freed now, the entry later
            self._canceled += 1
            if self._canceled > 64 and self._canceled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2].fn is not None]
                heapq.heapify(self._heap)
                self._canceled = 0

    def _spawn(self) -> None:
        # Called with the lock held.
        self._threads += 1
        threading.Thread(target=self._run, name=f"{self.name}-{self._threads}", daemon=True).start()

    def _pop_due(self, now: float) -> Optional[Callable[[], None]]:
        # Lock held.  Canceled entries at the top are dropped on the way.
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            fn = timer.fn
            if fn is None:
                self._canceled -= 1
                continue
            timer.fn = None  # ran: a later cancel() is a no-op
            return fn
        return None

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        self._threads -= 1
                        return
                    now = time.monotonic()
                    fn = self._pop_due(now)
                    if fn is not None:
                        heap = self._heap
                        # A burst: more is due and nobody is waiting for it.
                        if heap and heap[0][0] <= now and self._idle == 0 and self._threads < self.size:
                            self._spawn()
                        break
                    heap = self._heap
                    idle_left = idle_since + self.idle_timeout - now
                    if idle_left <= 0 and (not heap or self._threads > 1):
                        self._threads -= 1
                        return
                    timeout = max(idle_left, 0.05) if not heap else min(heap[0][0] - now, max(idle_left, 0.05))
                    self._idle += 1
                    self._cond.wait(timeout)
                    self._idle -= 1
            try:
                fn()
            except Exception:
                log.exception("%s: a scheduled call failed", self.name)
            idle_since = time.monotonic()
