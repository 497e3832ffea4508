"""The run handle that :meth:`Engine.submit` returns, as an executor returns a future.

A :class:`Run` is the one owner of everything the engine knows about one
prediction: its id, its listener, its slot, its temporary folder, its cancel
flag and whether it was released.  The caller keeps it and calls
:meth:`Run.cancel` / :meth:`Run.release`; the engine finds it by id only while it
is in flight.  Contracts: docs/architecture.rst.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from .engine import Engine, _Seat
    from .process import WorkerProcess

__all__ = ["Run", "Latch", "Unattached"]

# Serialises Latch.set() calls (rare and short), so each latch's lock is released once.
_SET_GUARD = threading.Lock()


class Latch:
    """A ``threading.Event`` that is set once and never cleared, in a tenth of its memory.

    An Event is a Condition (a deque, a lock, bound methods, a dict): about 1 KB.
    Every prediction kept for reading back, every run and every webhook sender
    waiting for a retry holds one, so 2,000 failing webhooks held megabytes of
    them.  This is one lock, held from creation until :meth:`set`: a waiter
    acquires it (waiting with a timeout as an Event would) and hands it on.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._set = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        with _SET_GUARD:
            if self._set:
                return
            self._set = True
            self._lock.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once set; False if *timeout* seconds passed first."""
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()  # the next waiter's turn
            return True
        return self._set


class Unattached:
    """The listener of a run submitted without one, until :meth:`Run.attach` gives it one.

    It receives nothing: a run submitted so must be waited for by its caller
    (``wait=True``), so no slot message is read before the caller attaches its
    listener and drives the run; a terminal call the engine makes meanwhile (the
    worker died, the engine stopped) is kept here and made on attach.
    """

    __slots__ = ("terminal", "attached")

    def __init__(self) -> None:
        self.terminal: Optional[tuple] = None  # (method, args) of the run's end, if it came first
        self.attached = Latch()


class Run:
    """One prediction handed to the engine (a future-like handle).

    ``id``, ``listener``, ``folder`` (the per-run temporary folder, created lazily
    by whoever writes into it first), ``cancel_requested`` (the only cancel flag),
    ``worker`` (index of the worker it runs on).  :meth:`cancel` and
    :meth:`release` may be called from any thread, any number of times, before or
    after the end: the folder is removed exactly once, after both the end and the
    first ``release()``.
    """

    __slots__ = ("id", "listener", "folder", "cancel_requested", "_engine", "seat", "proc", "slot",
                 "cancel_deadline", "error", "sent", "finished", "released", "_done")

    def __init__(self, run_id: str, listener: Any, *, folder: Optional[str] = None,
                 engine: Optional["Engine"] = None) -> None:
        self.id = run_id
        self.listener = listener
        self.folder = folder
        self.cancel_requested = False
        self._engine = engine
        self.seat: Optional["_Seat"] = None
        self.proc: Optional["WorkerProcess"] = None
        self.slot = -1
        self.cancel_deadline: Optional[float] = None
        self.error: Optional[str] = None  # a parent-side problem that turns "done" into "failed"
        self.sent = False  # the predict request is on its slot channel (cancels may follow it)
        self.finished = False  # the listener got its terminal call
        self.released = False
        self._done = Latch()

    @property
    def worker(self) -> Optional[int]:
        """Index of the worker the run was given to (None for a detached run)."""
        return self.seat.index if self.seat is not None else None

    def done(self) -> bool:
        """True once the listener got its terminal call."""
        return self.finished

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the terminal call; True if it happened.

        The waiting thread reads the run's slot itself meanwhile (when the platform
        allows it and nobody else does), so the answer reaches it without a hand-off
        from the I/O thread; the listener's calls then run on this thread.
        """
        if self._done.is_set():
            return True
        proc = self.proc
        if proc is not None and self.sent:
            deadline = None if timeout is None else time.monotonic() + timeout
            proc.drive(self.slot, self._done.is_set, timeout)
            if deadline is not None:
                timeout = max(0.0, deadline - time.monotonic())
        return self._done.wait(timeout)

    def read_until(self, until: Callable[[], bool], timeout: float) -> bool:
        """Read the run's slot on this thread until *until()*, the end or *timeout* s.

        For a streaming reader waiting for the run's first events: they reach it
        without a hand-off from the I/O thread, which a model flooding tokens keeps
        busy.  The slot goes back to the I/O thread afterwards (unless the run ended,
        as after :meth:`wait`).  True if *until()* or the end came; False after the
        timeout or when the slot cannot be read here (then nothing was waited for
        when the platform cannot, so the caller waits its own way).
        """
        proc = self.proc
        if proc is None or not self.sent or self._done.is_set():
            return self._done.is_set()
        proc.drive(self.slot, lambda: self._done.is_set() or until(), timeout)
        if not self._done.is_set():
            proc.give_slot(self.slot)
        return self._done.is_set() or until()

    def attach(self, listener: Any) -> None:
        """Give a run submitted without a listener (``listener=None``) its listener.

        The caller's thread then calls ``listener.started()``, and the run's end if the
        engine ended it meanwhile (a worker that died); every later call is made as
        for any run.  Why submit first: the request reaches the worker while its
        caller builds the listener (an HTTP prediction's record), instead of after.
        """
        if self._engine is None:
            raise RuntimeError(f"run {self.id!r} was not submitted without a listener")
        self._engine._attach(self, listener)  # (which checks, under its lock, that it was)

    def listener_now(self, timeout: float = 1.0) -> Any:
        """The run's listener; for one submitted without it, the one :meth:`attach` gives it,
        waiting up to *timeout* seconds (None if it did not come: the caller never attached)."""
        listener = self.listener
        if type(listener) is Unattached:
            if not listener.attached.wait(timeout):
                return None
            listener = self.listener
        return listener

    def cancel(self) -> bool:
        """Ask for the run to be canceled; False if it was no longer in flight.

        The flag is set at once (even after the end: an owner still finishing the
        run, say waiting for uploads, reads it); the worker gets the cancel as soon as the request
        is on its slot channel.  A run still running ``Settings.cancel_grace_period``
        seconds later gets its worker killed and respawned.
        """
        if self._engine is None:  # detached (a record used without an engine)
            self.cancel_requested = True
            return not self.finished
        return self._engine._cancel_run(self)

    def release(self) -> None:
        """The caller no longer needs the run's files: remove its folder (once, after the end)."""
        if self._engine is None:
            self.released = True
            return
        self._engine._release_run(self)

    def _mark_finished(self) -> None:
        self.finished = True
        self._done.set()

    def __repr__(self) -> str:
        state = "done" if self.finished else "running"
        return f"<Run {self.id!r} {state} worker={self.worker} slot={self.slot}>"
