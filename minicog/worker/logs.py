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
import io
import os
import selectors
import sys
import threading
import types
from typing import Any, Callable, Iterator, Optional

__all__ = [
    "LogOwner", "LogRouter", "SlotLogWriter", "TeeWriter", "FdCapture", "truncation_marker",
    "install_sys_hook",
]

#: Largest single log frame; bigger bursts are split at line boundaries.
_FRAME_CHARS = 256 * 1024


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
    """

    def __init__(self, emit: Callable[[str, str], None], max_line_bytes: int, name: str = "",
                 critical: Callable[[], Any] = _no_critical):
        self.name = name
        self._emit = emit
        self._limit = max(64, int(max_line_bytes))
        self._marker = truncation_marker(self._limit)
        self._pending = {"stdout": "", "stderr": ""}
        self._discarding = {"stdout": False, "stderr": False}
        self._lock = threading.RLock()
        self._critical = critical
        self.closed = False

    def write(self, source: str, text: str) -> bool:
        """Buffer *text*; send the whole lines.  False if this owner is closed."""
        with self._critical(), self._lock:
            if self.closed:
                return False
            if self._discarding[source]:
                cut = text.find("\n")
                if cut < 0:
                    return True
                text = text[cut + 1:]
                self._discarding[source] = False
            buf = self._pending[source] + text if self._pending[source] else text
            end = buf.rfind("\n") + 1
            complete, rest = buf[:end], buf[end:]
            if len(rest) * 4 > self._limit and len(rest.encode("utf-8", "surrogatepass")) > self._limit:
                complete += self._cut(rest) + "\n"
                rest = ""
                self._discarding[source] = True
            self._pending[source] = rest
            if complete:
                self._send(source, complete)
            return True

    def flush_partial(self) -> None:
        """Send the partial lines as they are (end of a prediction)."""
        with self._critical(), self._lock:
            for source in ("stdout", "stderr"):
                rest, self._pending[source] = self._pending[source], ""
                self._discarding[source] = False
                if rest:
                    self._send(source, rest)

    def close(self) -> None:
        """Flush the partial lines; later writes are refused (they become orphans)."""
        with self._critical(), self._lock:
            if not self.closed:
                self.flush_partial()
                self.closed = True

    # -- internals ---------------------------------------------------------------------

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


class LogRouter:
    """Finds the owner of each write (sync owner, then ContextVar, then control)."""

    def __init__(self, control_emit: Callable[[str, str], None], max_line_bytes: int,
                 critical: Callable[[], Any] = _no_critical):
        self.max_line_bytes = max_line_bytes
        self.critical = critical
        self.control = LogOwner(control_emit, max_line_bytes, "control", critical)
        self._sync_owner: Optional[LogOwner] = None
        self._ctx: contextvars.ContextVar[Optional[LogOwner]] = contextvars.ContextVar("_minicog_log_owner", default=None)
        self._running: set[LogOwner] = set()
        self._lock = threading.Lock()

    def open(self, emit: Callable[[str, str], None], name: str) -> LogOwner:
        """A new owner for a prediction that starts now."""
        owner = LogOwner(emit, self.max_line_bytes, name, self.critical)
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
        owner = self.current()
        if not owner.write(source, text):
            self.control.write(source, text)

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
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s and not _passing.depth:  # inside a tee's user stream: the tee logged it already
            self._router.write(self._source, s)
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
        for r in self._readers:
            self._selector.register(r, selectors.EVENT_READ)
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
            for fd in list(self._readers):
                while fd in self._readers and self._read(fd):
                    pass
