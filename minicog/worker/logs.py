"""Output capture in the worker: who wrote this line, and where does it go?

Python level
    ``sys.stdout``/``sys.stderr`` become :class:`SlotLogWriter` objects.  A write
    is appended to the line buffer of the *owner* of the calling code and only
    whole lines leave the buffer.  The owner is found as in coglet: first the
    process-wide "sync owner" (set around a sync prediction, so threads that
    prediction starts are covered too), then a ``ContextVar`` (set for an async
    prediction's task and inherited by the tasks it spawns).  No owner, or an
    owner whose prediction already ended (an orphan thread or task), means the
    control channel: setup output during setup, "orphan" output afterwards.

    Unlike coglet, the buffers are **per prediction**: when a prediction ends its
    partial lines are flushed into *its* logs (without inventing a newline) and
    never leak into the next prediction.  ``flush()`` on the writer does not
    emit a partial line (so the parent always receives whole lines while a
    prediction runs; progress bars that redraw with ``\\r`` end up as one line).

Batching
    Complete lines are not sent one frame each: a prediction's lines of one
    source are joined into frames of up to ``log_batch_chars`` characters, sent
    when full, when the other source writes, ``log_batch_interval`` seconds after
    the first line was batched (one :class:`LogFlusher` thread), before any
    output, metric or terminal message of the prediction (so logs keep their
    place among them), and before ``os._exit`` (:func:`install_exit_flush`).  A
    flood of 50 MB in 100-character prints used to cost ~520,000 frames, each
    encoded, sent, received, decoded and handled by the parent; now ~400.

Line length
    A line longer than ``max_line_bytes`` (UTF-8) is cut at a character boundary
    and ends with :func:`truncation_marker`; the rest of that line is dropped.
    Together with blocking sends (backpressure: a writer waits while the parent
    catches up) this bounds the worker's memory whatever the model prints.

fd level
    :class:`FdCapture` replaces file descriptors 1 and 2 with pipes drained by one
    reader thread, so output of C extensions and child processes
    (``os.write(1, ...)``, ``subprocess.run(["echo", ...])``) is never lost and
    never corrupts anything.  It is attributed to the running prediction when
    exactly one is running, else sent to the control channel.  At the end of a
    prediction the worker calls :meth:`FdCapture.drain`, which reads what is
    already in the pipes, so output written before predict() returned lands in
    that prediction's logs before its terminal message.

Replacement of sys.stdout/sys.stderr
    CPython raises no audit event for assignments to module attributes
    (``sys.stdout = x`` does not trigger ``object.__setattr__`` — checked on
    3.10–3.13), so the audit-hook idea of coglet's design is implemented with the
    hook Python does offer for modules: the ``sys`` module's class is switched to
    a ``ModuleType`` subclass whose ``__setattr__`` wraps a new stream in a
    :class:`TeeWriter` (the user's stream and the routing both get every write).
    Re-assigning our own writer or a tee is let through unchanged (no nesting).
    Only a write straight into ``sys.__dict__`` bypasses the tee.

    De-duplication by design: the tee logs what it is given, then hands it to the
    user's stream with a per-thread *pass-through* mark set; while the mark is set
    our writers log nothing.  So a user stream that passes the text back to the
    writer it replaced (``sys.stdout = Tee(sys.stdout, file)``, a common logging
    idiom) is logged once, whatever it does with it, and nested user tees are
    too.  ``sys.__stdout__``/``sys.__stderr__`` are our writers as well (the
    originals write to the capture pipes, which would log the text a second
    time from another thread), so ``Tee(sys.__stdout__, file)`` is logged once too.

Signals
    Sync predictions can be interrupted by SIGUSR1 (see :mod:`.cancel`).  A send
    interrupted half-way would corrupt the channel, so writers enter the cancel
    guard's *critical section* while they hold a buffer or send a frame.
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import functools
import io
import os
import select
import selectors
import sys
import threading
import time
import types
from typing import Any, Callable, Iterator, Optional

__all__ = [
    "LogOwner", "LogFlusher", "LogRouter", "SlotLogWriter", "TeeWriter", "FdCapture", "truncation_marker",
    "install_sys_hook", "install_exit_flush",
]

#: Largest single log frame; bigger bursts are split at line boundaries.
_FRAME_CHARS = 256 * 1024


@functools.lru_cache(maxsize=4)  # one limit per worker; a LogOwner is made per prediction
def truncation_marker(limit: int) -> str:
    """The suffix of a cut line, naming the bound like coglet's marker."""
    if limit % (1024 * 1024) == 0:
        size = f"{limit // (1024 * 1024)} MiB"
    elif limit % 1024 == 0:
        size = f"{limit // 1024} KiB"
    else:
        size = f"{limit} bytes"
    return f"[**** LOG LINE TRUNCATED AT {size} ****]"


@contextlib.contextmanager
def _no_critical() -> Iterator[None]:
    yield


class LogOwner:
    """The log state of one prediction (or of the control channel).

    ``emit(source, data)`` sends whole lines (a slot ``log`` or a control ``log``).
    Every method may be called from any thread.

    Complete lines are batched: consecutive lines of one source are joined and sent
    as one frame when the batch reaches ``batch_chars``, when the other source
    writes, when the *flusher* runs (at most its interval after the first line was
    batched), or when the caller asks (:meth:`flush_lines`, before an output, a
    metric or the end of the prediction, so logs keep their place among them).
    Without a flusher every complete line is sent at once.
    """

    def __init__(self, emit: Callable[[str, str], None], max_line_bytes: int, name: str = "",
                 critical: Callable[[], Any] = _no_critical, flusher: Optional["LogFlusher"] = None,
                 batch_chars: int = _FRAME_CHARS):
        self.name = name
        self._emit = emit
        self._limit = max(64, int(max_line_bytes))
        self._marker = truncation_marker(self._limit)
        self._pending = {"stdout": "", "stderr": ""}
        self._discarding = {"stdout": False, "stderr": False}
        self._batch: list[str] = []
        self._batch_source = "stdout"
        self._batch_chars = 0
        self._batch_limit = max(1, min(int(batch_chars), _FRAME_CHARS))
        self._flusher = flusher
        self._scheduled = False
        self._lock = threading.RLock()
        self._critical = critical
        self.closed = False

    def write(self, source: str, text: str) -> bool:
        """Buffer *text*; whole lines go to the batch.  False if this owner is closed."""
        with self._lock:
            if self.closed:
                return False
            if self._discarding[source]:
                cut = text.find("\n")
                if cut < 0:
                    return True
                text = text[cut + 1:]
                self._discarding[source] = False
            pending = self._pending[source]
            buf = pending + text if pending else text
            if "\n" not in text:
                # The common first half of print(x): the partial line grows.
                if len(buf) * 4 > self._limit and len(buf.encode("utf-8", "surrogatepass")) > self._limit:
                    self._pending[source] = ""
                    self._discarding[source] = True
                    self._add(source, self._cut(buf) + "\n")
                else:
                    self._pending[source] = buf
                return True
            end = buf.rfind("\n") + 1
            complete, rest = buf[:end], buf[end:]
            if rest and len(rest) * 4 > self._limit and len(rest.encode("utf-8", "surrogatepass")) > self._limit:
                complete += self._cut(rest) + "\n"
                rest = ""
                self._discarding[source] = True
            self._pending[source] = rest
            self._add(source, complete)
            return True

    def flush_lines(self) -> None:
        """Send the batched complete lines now (partial lines stay)."""
        with self._lock:
            self._scheduled = False
            if self._batch:
                self._send_batch()

    def flush_partial(self) -> None:
        """Send the batch, then the partial lines as they are (end of a prediction)."""
        with self._lock:
            self._scheduled = False
            if self._batch:
                self._send_batch()
            for source in ("stdout", "stderr"):
                rest, self._pending[source] = self._pending[source], ""
                self._discarding[source] = False
                if rest:
                    with self._critical():
                        self._send(source, rest)

    def close(self) -> None:
        """Flush the partial lines; later writes are refused (they become orphans)."""
        with self._lock:
            if not self.closed:
                self.flush_partial()
                self.closed = True

    # -- internals (lock held) -----------------------------------------------------------

    def _add(self, source: str, text: str) -> None:
        if self._batch and source != self._batch_source:
            self._send_batch()  # stdout and stderr stay in the order they were written
        self._batch_source = source
        self._batch.append(text)
        self._batch_chars += len(text)
        if self._flusher is None or self._batch_chars >= self._batch_limit:
            self._send_batch()
        elif not self._scheduled:
            self._scheduled = True
            self._flusher.schedule(self)

    def _send_batch(self) -> None:
        batch = self._batch
        data = batch[0] if len(batch) == 1 else "".join(batch)
        self._batch = []
        self._batch_chars = 0
        # A send torn by the cancel signal would corrupt the channel: defer it.
        with self._critical():
            self._send(self._batch_source, data)

    def _cut(self, line: str) -> str:
        keep = max(0, self._limit - len(self._marker.encode()))
        return line.encode("utf-8", "surrogatepass")[:keep].decode("utf-8", "ignore") + self._marker

    def _send(self, source: str, data: str) -> None:
        if len(data) * 4 > self._limit:
            # Only then can a line exceed the bound; check each one.
            lines = data.splitlines(keepends=True)
            if any(len(l) * 4 > self._limit and len(l.encode("utf-8", "surrogatepass")) > self._limit for l in lines):
                data = "".join(
                    (self._cut(l) + ("\n" if l.endswith("\n") else ""))
                    if len(l.encode("utf-8", "surrogatepass")) > self._limit else l
                    for l in lines
                )
        while len(data) > _FRAME_CHARS:
            cut = data.rfind("\n", 0, _FRAME_CHARS) + 1 or _FRAME_CHARS
            self._emit(source, data[:cut])
            data = data[cut:]
        if data:
            self._emit(source, data)


class LogFlusher:
    """One thread that sends batched log lines at most *interval* seconds after they were written.

    Owners call :meth:`schedule` when their batch gets its first line (once per
    batch, so a flood costs one call per frame, not one per line).  The thread is
    started on first use and lives as long as the worker.
    """

    def __init__(self, interval: float):
        self.interval = max(0.0, float(interval))
        self._due: list[LogOwner] = []
        self._cond = threading.Condition(threading.Lock())
        self._thread: Optional[threading.Thread] = None

    def schedule(self, owner: LogOwner) -> None:
        with self._cond:
            self._due.append(owner)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="minicog-log-flusher", daemon=True)
                self._thread.start()
            if len(self._due) == 1:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._due:
                    self._cond.wait()
            time.sleep(self.interval)  # let the batch grow: lines written meanwhile join it
            with self._cond:
                due, self._due = self._due, []
            for owner in due:
                try:
                    owner.flush_lines()
                except Exception:
                    pass  # a broken channel: the prediction's terminal send reports it


class LogRouter:
    """Finds the owner of each write (sync owner, then ContextVar, then control)."""

    def __init__(self, control_emit: Callable[[str, str], None], max_line_bytes: int,
                 critical: Callable[[], Any] = _no_critical, batch_interval: Optional[float] = None,
                 batch_chars: int = _FRAME_CHARS):
        self.max_line_bytes = max_line_bytes
        self.critical = critical
        # None: no batching (each complete line is sent at once).
        self.flusher = LogFlusher(batch_interval) if batch_interval is not None else None
        self.batch_chars = batch_chars
        self.control = LogOwner(control_emit, max_line_bytes, "control", critical, self.flusher, batch_chars)
        self._sync_owner: Optional[LogOwner] = None
        self._ctx: contextvars.ContextVar[Optional[LogOwner]] = contextvars.ContextVar("_minicog_log_owner", default=None)
        self._running: set[LogOwner] = set()
        self._lock = threading.Lock()

    def open(self, emit: Callable[[str, str], None], name: str) -> LogOwner:
        """A new owner for a prediction that starts now."""
        owner = LogOwner(emit, self.max_line_bytes, name, self.critical, self.flusher, self.batch_chars)
        with self._lock:
            self._running.add(owner)
        return owner

    def close(self, owner: LogOwner) -> None:
        """The prediction ended: flush its partial lines and forget it."""
        with self._lock:
            self._running.discard(owner)
            if self._sync_owner is owner:
                self._sync_owner = None
        owner.close()

    def set_sync_owner(self, owner: Optional[LogOwner]) -> None:
        with self._lock:
            self._sync_owner = owner

    def set_context_owner(self, owner: Optional[LogOwner]) -> contextvars.Token:
        return self._ctx.set(owner)

    def current(self) -> LogOwner:
        owner = self._sync_owner
        if owner is not None and not owner.closed:
            return owner
        owner = self._ctx.get()
        if owner is not None and not owner.closed:
            return owner
        return self.control

    def write(self, source: str, text: str) -> None:
        # Called from user code: critical throughout, so a cancel cannot leave a lock
        # held (see minicog.worker.cancel).
        with self.critical():
            # current(), inlined: this runs twice per print() of the model.
            owner = self._sync_owner
            if owner is None or owner.closed:
                owner = self._ctx.get()
                if owner is None or owner.closed:
                    owner = self.control
            if not owner.write(source, text):
                self.control.write(source, text)

    def flush_all(self, timeout: float = 2.0) -> None:
        """Send every owner's batched and partial lines (the process is about to exit).

        Best effort: an owner whose lock another thread holds for longer than
        *timeout* seconds (a send blocked on a parent that stopped reading) is skipped.
        """
        with self._lock:
            owners = [*self._running, self.control]
        for owner in owners:
            if owner._lock.acquire(timeout=timeout):
                try:
                    owner.flush_partial()
                except Exception:
                    pass  # the channel is broken: nothing more can be sent
                finally:
                    owner._lock.release()

    def write_fd(self, source: str, text: str) -> None:
        """fd-level output: the single running prediction, else the control channel."""
        with self._lock:
            owner = next(iter(self._running)) if len(self._running) == 1 else self.control
        if not owner.write(source, text):
            self.control.write(source, text)


class _PassThrough(threading.local):
    """Per-thread depth of user-stream calls made by a :class:`TeeWriter`."""

    depth = 0


_passing = _PassThrough()


class SlotLogWriter(io.TextIOBase):
    """What ``sys.stdout``/``sys.stderr`` are in the worker.

    ``fileno()``, ``buffer``, ``encoding`` and ``errors`` come from the original
    stream, whose fd is the capture pipe, so binary writers are captured too.
    """

    def __init__(self, router: LogRouter, source: str, original: Any):
        self._router = router
        self._route = router.write
        self._source = source
        self._original = original

    @property
    def name(self) -> str:
        return f"<{self._source}>"

    @property
    def encoding(self) -> str:
        return getattr(self._original, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:
        return getattr(self._original, "errors", None) or "strict"

    @property
    def buffer(self) -> Any:
        return self._original.buffer

    def fileno(self) -> int:
        return self._original.fileno()

    def isatty(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if s.__class__ is not str and not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s and not _passing.depth:  # inside a tee's user stream: the tee logged it already
            self._route(self._source, s)
        return len(s)

    def flush(self) -> None:
        # Whole lines only while a prediction runs; partial lines go out at its end.
        # Flushing the original stream pushes binary writes (``.buffer``) into the pipe.
        try:
            self._original.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:  # closing sys.stdout must not break routing
        pass

    @property
    def closed(self) -> bool:
        return False


class TeeWriter(io.TextIOBase):
    """A user's replacement stream, tee'd: both the routing and the user's stream get each write."""

    def __init__(self, inner: SlotLogWriter, user_stream: Any, source: str):
        self._inner = inner
        self._user = user_stream
        self._source = source

    @property
    def user_stream(self) -> Any:
        return self._user

    def __del__(self) -> None:
        # IOBase.__del__ would close() the user's stream when the tee is dropped
        # (e.g. after ``sys.stdout = saved``); the stream is the user's to close.
        pass

    def write(self, s: str) -> int:
        self._inner.write(s)  # logs nothing if an outer tee already did
        _passing.depth += 1
        try:
            result = self._user.write(s)
        finally:
            _passing.depth -= 1
        return result if isinstance(result, int) else len(s)

    def flush(self) -> None:
        self._inner.flush()
        flush = getattr(self._user, "flush", None)
        if flush is not None:
            _passing.depth += 1
            try:
                flush()
            finally:
                _passing.depth -= 1

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return bool(getattr(self._user, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._user.fileno()

    def close(self) -> None:
        close = getattr(self._user, "close", None)
        if close is not None:
            close()

    @property
    def closed(self) -> bool:
        return bool(getattr(self._user, "closed", False))

    def __getattr__(self, name: str) -> Any:
        # Whatever else the user's object offers (getvalue(), name, mode...).
        return getattr(self._user, name)


def install_exit_flush(router: LogRouter) -> None:
    """Make ``os._exit`` in this process send the batched log lines first.

    A model that prints "about to die" and calls ``os._exit`` must not lose that line
    to batching.  A forked child inherits the wrapper but must not send the parent's
    lines through the inherited channels, so only the worker's own pid flushes.
    (SIGKILL cannot be caught: lines batched in the last ``log_batch_interval`` are
    lost then, as with any buffer.)
    """
    real_exit = os._exit
    pid = os.getpid()

    def _exit(status: int) -> None:
        if os.getpid() == pid:
            try:
                router.flush_all()
            except BaseException:
                pass
        real_exit(status)

    _exit.__doc__ = real_exit.__doc__
    os._exit = _exit


def install_sys_hook(writers: dict[str, SlotLogWriter]) -> None:
    """Wrap later ``sys.stdout = x`` / ``sys.stderr = x`` assignments in a :class:`TeeWriter`."""

    def wrap(name: str, value: Any) -> Any:
        inner = writers.get(name)
        if inner is None or value is None or value is inner or isinstance(value, (SlotLogWriter, TeeWriter)):
            return value
        return TeeWriter(inner, value, name)

    class _SysModule(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if name in ("stdout", "stderr"):
                value = wrap(name, value)
            super().__setattr__(name, value)

    sys.__class__ = _SysModule


class FdCapture:
    """Replace fds 1 and 2 by pipes read by one thread; see the module docstring.

    ``saved_stderr`` is a duplicate of the original fd 2, for the worker's last words
    when the channels are gone.
    """

    def __init__(self, router: LogRouter):
        self._router = router
        self._lock = threading.Lock()
        self.saved_stderr = os.dup(2)
        os.set_inheritable(self.saved_stderr, False)
        self._readers: dict[int, tuple[str, Any]] = {}
        for fd, source in ((1, "stdout"), (2, "stderr")):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            os.set_blocking(r, False)
            self._readers[r] = (source, codecs.getincrementaldecoder("utf-8")("replace"))
        self._selector = selectors.DefaultSelector()
        # drain() asks this poll object which pipe has bytes: one system call per
        # prediction instead of a read (raising BlockingIOError) per pipe.
        self._pending = select.poll()
        for r in self._readers:
            self._selector.register(r, selectors.EVENT_READ)
            self._pending.register(r, select.POLLIN)
        self._thread = threading.Thread(target=self._run, name="minicog-fd-capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self._readers:
            for key, _ in self._selector.select():
                with self._lock:
                    self._read(key.fd)

    def _read(self, fd: int) -> bool:
        """Read what is available on *fd* (lock held); False at EOF or when empty."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if not data:
            self._selector.unregister(fd)
            self._pending.unregister(fd)
            self._readers.pop(fd, None)
            return False
        source, decoder = self._readers[fd]
        text = decoder.decode(data)
        if text:
            self._router.write_fd(source, text)
        return True

    def drain(self) -> None:
        """Route everything already written to fds 1 and 2 (called at a prediction's end)."""
        with self._lock:
            for fd, _ in self._pending.poll(0):
                while fd in self._readers and self._read(fd):
                    pass
