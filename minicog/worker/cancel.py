"""Cancelling a sync prediction: SIGUSR1 to the main thread, raised only inside a guard.

Sync predictions run on the worker's main thread, the only thread on which
Python runs signal handlers.  To cancel, the I/O thread records the id in
``requested`` and sends SIGUSR1 *to the main thread* (``pthread_kill``; a
process-directed signal may be taken by another thread and would then not
interrupt the main thread's blocking call).  The handler raises
:class:`CancelationException` only when the main thread is inside
:meth:`CancelGuard.cancelable` for that very prediction, so minicog's own
bookkeeping (sending frames, cleaning up) is never interrupted; blocking calls
such as ``time.sleep`` are interrupted at once (PEP 475 retries the call only
if the handler returns normally).

Inside the guard, minicog code that must not be torn runs in :meth:`critical`:
a signal arriving then is deferred and raised when the critical section ends,
still inside user code.  Every call from user code into minicog (a write to
``sys.stdout``, a metric) is critical from its first line, not only around the
send: an exception raised between a lock's acquire and its ``with`` block (which
can happen inside a lock whose ``__enter__`` is Python code, such as
``threading.Condition``) would leave the lock held, and the next print would wait
for it forever.  A cancel
that arrives while the main thread is outside the guard (between two
generator items, say) is raised when the guard is next entered — for a
generator, by throwing it into the generator so the model's handler runs.

A signal that lands after the main thread's last check for pending signals and
before it enters a blocking call (``time.sleep``, a read) is handled only when
that call returns, up to the whole prediction later.  So the signal is sent again
every ``Settings.cancel_resignal_interval`` seconds by a small thread until the exception
has been raised for that prediction or it left the guard.  The exception is
raised at most once per prediction: the model's own ``except
CancelationException`` block is never interrupted by a later signal.

Only predictions the worker has received and not yet finished can be
canceled (:meth:`CancelGuard.register` ... :meth:`CancelGuard.forget`).  A
cancel for any other id is stale — it crossed the prediction's terminal
message on its way — and is ignored, so it cannot stick to the id and cancel a
later prediction that reuses it (Cog lets ids be reused once finished).  The
parent sends a cancel only after the prediction's request, and the worker
reads slot channels before the control channel; a sync worker's main thread,
which reads its slot itself, also gets a copy of the cancel behind the request
on the slot channel.  So a cancel never arrives "too early".
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

from minicog.sdk.exceptions import CancelationException

__all__ = ["CancelGuard"]


class CancelGuard:
    def __init__(self, resignal_interval: float = 0.05) -> None:
        self._resignal_interval = resignal_interval
        self._main = threading.main_thread().ident
        self._active: Optional[str] = None
        self._requested: set[str] = set()
        self._known: set[str] = set()  # received and not yet finished
        self._critical = 0
        self._deferred = False
        self._taken: Optional[str] = None  # the prediction a CancelationException was raised for
        self._resignaling: set[str] = set()  # predictions a _resignal thread watches
        self._lock = threading.Lock()
        self._section = _Critical(self)

    def install(self) -> None:
        """Set the SIGUSR1 handler (call on the main thread)."""
        signal.signal(signal.SIGUSR1, self._handler)

    # -- any thread --------------------------------------------------------------------

    def register(self, prediction_id: str) -> None:
        """*prediction_id* was received (queued or running): cancels for it count from now."""
        with self._lock:
            self._known.add(prediction_id)

    def request(self, prediction_id: str) -> bool:
        """Ask for *prediction_id* to stop (running or about to start); False if it is not known."""
        with self._lock:
            if prediction_id not in self._known:
                return False
            self._requested.add(prediction_id)
            running = self._active == prediction_id
            resignal = running and prediction_id not in self._resignaling
            if resignal:
                self._resignaling.add(prediction_id)
        if running and self._main is not None:
            signal.pthread_kill(self._main, signal.SIGUSR1)
        if resignal and self._main is not None:
            threading.Thread(target=self._resignal, args=(prediction_id,), name="minicog-cancel-resignal",
                             daemon=True).start()
        return True

    def _pending(self, prediction_id: str) -> bool:
        """The cancel of *prediction_id* is still to be raised on the main thread."""
        with self._lock:
            return (prediction_id in self._requested and self._active == prediction_id
                    and self._taken != prediction_id)

    def _resignal(self, prediction_id: str) -> None:
        """Signal the main thread again until the cancel was raised or the prediction left the guard."""
        stop = threading.Event()  # only for its interruptible, bounded wait
        try:
            while not stop.wait(self._resignal_interval) and self._pending(prediction_id):
                signal.pthread_kill(self._main, signal.SIGUSR1)  # type: ignore[arg-type]
        finally:
            with self._lock:
                self._resignaling.discard(prediction_id)

    def was_requested(self, prediction_id: str) -> bool:
        with self._lock:
            return prediction_id in self._requested

    def forget(self, prediction_id: str) -> bool:
        """The prediction ended: later cancels for this id are stale.

        Returns whether its cancel had been requested (as :meth:`was_requested`
        just before, in the same lock).
        """
        with self._lock:
            requested = prediction_id in self._requested
            if requested:
                self._requested.discard(prediction_id)
            self._known.discard(prediction_id)
            if self._taken == prediction_id:
                self._taken = None
        return requested

    # -- main thread -------------------------------------------------------------------

    def _should_raise(self) -> bool:
        active = self._active
        return active is not None and active in self._requested and active != self._taken

    def _raise(self) -> None:
        self._taken = self._active  # once per prediction (see the module docstring)
        raise CancelationException()

    def taken(self, prediction_id: str) -> None:
        """The caller delivers the cancel of *prediction_id* itself (``generator.throw``):
        no signal raises it again."""
        self._taken = prediction_id

    def _handler(self, signum: int, frame: object) -> None:
        if self._should_raise():
            if self._critical:
                self._deferred = True
                return
            self._raise()

    def cancelable(self, prediction_id: str, *, check: bool = True) -> "_Cancelable":
        """The region where a cancel of *prediction_id* raises CancelationException.

        With ``check`` (the default) a cancel requested earlier raises on entry;
        without, the caller delivers it itself (e.g. ``generator.throw``, so the
        model's own ``except CancelationException`` sees it).  A plain object, not a
        generator: it is entered once per prediction (once per item of a stream).
        """
        return _Cancelable(self, prediction_id, check)

    def critical(self) -> "_Critical":
        """A region of minicog code the cancel signal must not tear (main thread only;
        re-entrant).  A plain object rather than a generator: it runs on every print."""
        return self._section


class _Cancelable:
    """The context manager :meth:`CancelGuard.cancelable` returns.

    Whatever interrupts ``__enter__`` (the cancel it raises on purpose, or one a
    signal raises while it runs) leaves the guard inactive, as the ``finally`` of a
    generator-based manager would."""

    __slots__ = ("_guard", "_id", "_check")

    def __init__(self, guard: CancelGuard, prediction_id: str, check: bool) -> None:
        self._guard = guard
        self._id = prediction_id
        self._check = check

    def __enter__(self) -> None:
        guard = self._guard
        try:
            guard._active = self._id  # plain assignment: atomic, no lock a signal could tear
            if self._check and guard._should_raise():
                guard._raise()
        except BaseException:
            guard._active = None
            guard._deferred = False
            raise

    def __exit__(self, *exc_info: object) -> None:
        guard = self._guard
        guard._active = None
        guard._deferred = False


class _Critical:
    """The context manager :meth:`CancelGuard.critical` returns.

    A signal that arrives before ``__enter__`` has counted raises before anything was
    acquired; one that arrives after ``__exit__`` uncounted raises after everything
    was released; in between the handler only defers it."""

    __slots__ = ("_guard",)

    def __init__(self, guard: CancelGuard) -> None:
        self._guard = guard

    def __enter__(self) -> None:
        guard = self._guard
        if threading.get_ident() == guard._main:
            guard._critical += 1

    def __exit__(self, *exc_info: object) -> None:
        guard = self._guard
        if threading.get_ident() != guard._main:
            return
        guard._critical -= 1
        if not guard._critical and guard._deferred:
            guard._deferred = False
            if guard._should_raise():
                guard._raise()
