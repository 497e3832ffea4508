"""Connections wait in a selector; requests run on a bounded pool of threads.

:class:`ConnectionServer` is the connection layer under :mod:`minicog.server.http`.
A thread per connection (``ThreadingHTTPServer``) costs a thread for every idle
keep-alive client and for every slow client trickling in its request, and the
threads answering ``409`` in a tight loop starve the one that completes
predictions.  Here instead:

* **One selector thread** (``selectors.DefaultSelector``: epoll on Linux, so any
  descriptor number works) accepts connections and reads requests without
  blocking.  A connection costs a thread only once a whole request is buffered:
  the head (bounded by ``Settings.max_header_bytes``) and the body its
  ``Content-Length`` or chunked framing announces (bounded by
  ``Settings.max_body_bytes``).  What cannot be judged complete (``Expect:
  100-continue``, a head or body over its limit, malformed framing) is handed
  over at once, so the handler gives the usual answer (100, 431, 413, 400).
* **Timeouts without threads.**  An idle keep-alive connection is closed after
  ``Settings.read_timeout`` seconds of silence; a request head must arrive
  within ``Settings.header_timeout`` seconds of its first byte (a slow-loris
  client that sends one byte every few seconds is cut then), and a body may not
  stall for more than ``read_timeout``.  The selector sweeps its connections
  for these deadlines; no thread waits on them.
* **A bounded pool** of ``Settings.http_threads`` threads parses and answers the
  buffered requests with :mod:`http.server`'s handler machinery.  Threads are
  started on demand and leave after ``Settings.http_thread_idle_timeout``
  seconds without work.  A job that is the *completion* of a waiting
  prediction goes to the front of the queue, so a flood of requests answered
  ``409`` cannot delay the answers of the predictions that hold the slots.
* **Waiting costs no thread.**  A sync request parks its connection
  (:meth:`ConnectionServer.park`): the selector watches the socket for the
  client hanging up (which cancels the prediction) and the prediction's
  completion queues the response on the pool.
* A long-lived response (an SSE stream) calls :meth:`Pool.detach`: the thread
  leaves the pool for the stream's lifetime, so streams never use up the
  threads that answer other requests.

Ownership: a connection is owned by exactly one of the selector thread (reading
or watching), a pool job, or a parked waiter.  Interest in the poller is
one-shot (``EPOLLONESHOT`` on Linux, emulated with ``selectors`` elsewhere), so
an event disarms the connection and only its owner re-arms it.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import selectors
import socket
import threading
import time
from typing import Any, Callable, Optional

from minicog.settings import Settings

__all__ = ["ConnectionServer", "Connection", "Pool", "RequestReader", "SocketWriter", "request_ready", "peer_state"]

log = logging.getLogger("minicog.http")

# Bytes asked of the kernel per recv on a readable connection (recv allocates this much
# before shrinking to what came; larger would cost an mmap per small request).
_RECV_BYTES = 64 * 1024
# A body at least this large that ends the buffer is handed over without a copy.
_HAND_OVER_BYTES = 1024 * 1024
# Connections accepted per readiness event of the listening socket (fairness with reads).
_ACCEPT_BATCH = 256
# Seconds between two sweeps of the connection deadlines.
_SWEEP_INTERVAL = 0.1
# Seconds the listening socket is left alone after accept() ran out of descriptors.
_EMFILE_PAUSE = 0.1
# Longest chunk-size line read by the handler (its readline limit); longer → hand over.
_CHUNK_LINE = 1024


class Pool:
    """At most *size* threads running queued jobs; urgent jobs jump the queue.

    Threads start when jobs wait and no thread is idle, and exit after
    *idle_timeout* seconds without a job, so an idle server keeps none.
    """

    def __init__(self, size: int, idle_timeout: float, name: str = "minicog-http"):
        self.size = max(1, size)
        self.idle_timeout = idle_timeout
        self.name = name
        self._jobs: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._threads = 0
        self._idle = 0
        self._stopping = False
        self._local = threading.local()
        self._seq = 0

    @property
    def threads(self) -> int:
        """Threads currently in the pool (detached ones not counted)."""
        return self._threads

    def submit(self, fn: Callable[[], None], *, urgent: bool = False) -> None:
        with self._cond:
            if self._stopping:
                return
            if urgent:
                self._jobs.appendleft(fn)
            else:
                self._jobs.append(fn)
            self._spawn_if_needed()
            self._cond.notify()

    def _spawn_if_needed(self) -> None:
        # Called with the lock held.  Idle threads that were notified still count as
        # idle until they wake, so this never starts more threads than jobs need.
        if len(self._jobs) > self._idle and self._threads < self.size:
            self._threads += 1
            self._seq += 1
            threading.Thread(target=self._run, name=f"{self.name}-{self._seq}", daemon=True).start()

    def may_linger(self) -> bool:
        """True on a pool thread (not detached) while no job waits and a thread is to spare:
        the caller may keep this thread a moment for its connection's next request."""
        if getattr(self._local, "detached", True):
            return False
        return not self._jobs and (self._idle > 0 or self._threads < self.size)

    def queued(self) -> bool:
        """True while jobs wait for a thread."""
        return bool(self._jobs)

    def detach(self) -> None:
        """The calling pool thread leaves the pool (for a long-lived job); it ends with its job."""
        if getattr(self._local, "detached", True):
            return  # not a pool thread, or already detached
        with self._cond:
            self._local.detached = True
            self._threads -= 1
            self._spawn_if_needed()

    def _run(self) -> None:
        self._local.detached = False
        while True:
            with self._cond:
                while not self._jobs:
                    if self._stopping:
                        self._threads -= 1
                        return
                    self._idle += 1
                    woke = self._cond.wait(self.idle_timeout)
                    self._idle -= 1
                    if not woke and not self._jobs:
                        self._threads -= 1
                        return
                job = self._jobs.popleft()
            try:
                job()
            except Exception:
                log.exception("error in an HTTP job")
            if self._local.detached:
                return

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._jobs.clear()
            self._cond.notify_all()


class RequestReader:
    """``rfile`` of a connection: the bytes the selector buffered, then the socket.

    Only what :mod:`http.server`'s handler uses (``readline``, ``read``).  Reads
    from the socket block up to its timeout (``Settings.read_timeout``).
    """

    def __init__(self, sock: socket.socket, buf: bytearray):
        self.sock = sock
        self.buf = buf
        self.pos = 0

    def _fill(self) -> bool:
        data = self.sock.recv(_RECV_BYTES)
        if not data:
            return False
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += data
        return True

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = len(self.buf) if limit < 0 else min(len(self.buf), self.pos + limit)
            i = self.buf.find(b"\n", self.pos, end)
            if i >= 0:
                n = i + 1 - self.pos
                break
            if limit >= 0 and len(self.buf) - self.pos >= limit:
                n = limit
                break
            if not self._fill():
                n = len(self.buf) - self.pos
                break
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def head_lines(self, limit: int) -> Optional[list[bytes]]:
        """The request line and header lines (without their CRLF), when the whole head
        is buffered, fits in *limit* bytes and ends every line with CRLF; else None and
        nothing is consumed (then :meth:`readline` reads it line by line).

        One search and one split instead of a ``readline`` per line: a request's head
        is almost always in the first read.
        """
        buf, pos = self.buf, self.pos
        end = buf.find(b"\r\n\r\n", pos, pos + limit)
        if end <= pos:
            return None
        head = bytes(buf[pos:end])
        if head.count(b"\n") != head.count(b"\r\n"):
            return None  # a bare LF ends a line too: the careful path
        self.pos = end + 4
        return head.split(b"\r\n")

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            while self._fill():
                pass
            size = len(self.buf) - self.pos
        while len(self.buf) - self.pos < size:
            if not self._fill():
                break
        if size >= _HAND_OVER_BYTES and len(self.buf) - self.pos == size:
            # A large body the selector buffered: hand over the buffer itself (a bytearray)
            # rather than a copy, so a 100 MB request does not cost 200 MB.
            del self.buf[:self.pos]
            out_array, self.buf, self.pos = self.buf, bytearray(), 0
            return out_array  # type: ignore[return-value]
        end = min(len(self.buf), self.pos + size)
        with memoryview(self.buf) as view:
            out = bytes(view[self.pos:end])  # one copy: a bytearray slice would make a second
        self.pos = end
        if self.pos == len(self.buf):
            # All consumed: free the buffer now rather than hold the body twice.
            self.buf.clear()
            self.pos = 0
        return out

    def remaining(self) -> bytearray:
        """Bytes read past the current request (a pipelined next request)."""
        return bytearray(self.buf[self.pos:])


class SocketWriter:
    """``wfile`` of a connection: unbuffered, every write is one ``sendall``."""

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def write(self, data: Any) -> int:
        self.sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


class Connection:
    """One client connection and the state of the request being buffered."""

    __slots__ = ("sock", "fd", "address", "buf", "mode", "deadline", "head_end", "need", "chunk_pos",
                 "chunk_total", "gone", "handler", "waiter", "registered", "lock", "quick")

    def __init__(self, sock: socket.socket, address: Any):
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.buf = bytearray()
        #: "read" (selector buffers a request), "busy" (a job owns it), "watch" (parked,
        #: watched for a hang-up), "wait" (parked, not watched), "closed".
        self.mode = "busy"
        self.deadline = 0.0
        self.gone = False
        self.handler: Any = None
        self.waiter: Optional[tuple[Callable[[], None], Callable[[], None]]] = None
        self.registered = False
        self.lock = threading.Lock()  # the hang-up check against the end of a parked wait
        #: Its last request came within twice Settings.spin_wait of the answer before it:
        #: the next one is waited for spinning (see ConnectionServer._next_request).
        self.quick = True
        self.reset_scan()

    def reset_scan(self) -> None:
        self.head_end = -1     # index just past the blank line ending the head, once found
        self.need = -1         # total bytes of head + body when Content-Length framed
        self.chunk_pos = -1    # next chunk-size line when chunked framed
        self.chunk_total = 0


def _head_end(buf: bytearray, limit: int) -> int:
    """Index just past the head's terminating blank line, or -1 if not (yet) there."""
    window = min(len(buf), limit + 4)
    a = buf.find(b"\n\r\n", 0, window)
    b = buf.find(b"\n\n", 0, window)
    ends = [i + 3 for i in (a,) if i >= 0] + [i + 2 for i in (b,) if i >= 0]
    return min(ends) if ends else -1


def _framing(head: bytes) -> tuple[Optional[bytes], Optional[bytes], bool]:
    """(Content-Length, Transfer-Encoding, Expect 100-continue) as the raw head states them."""
    lower = head.lower()
    if b"transfer-encoding" not in lower and b"expect" not in lower:
        # The usual head: at most one mention of Content-Length, at a line's start and
        # right before its colon.  Found with a few searches in C instead of a Python
        # loop over every line; anything else takes the loop below.
        mentions = lower.count(b"content-length")
        if not mentions:
            return None, None, False
        at = lower.find(b"\ncontent-length:") if mentions == 1 else -1
        if at >= 0:
            start = at + 16
            stop = lower.find(b"\n", start)
            return head[start:stop if stop >= 0 else len(head)].strip(), None, False
    length = coding = None
    expect = False
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.strip().lower()
        if name == b"content-length":
            value = value.strip()
            if length is not None and length != value:
                return b"conflict", coding, expect  # repeated and different: the handler answers 400
            length = value
        elif name == b"transfer-encoding":
            coding = value.strip().lower()
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            expect = True
    return length, coding, expect


def request_ready(conn: Connection, settings: Settings) -> bool:
    """True when *conn*'s buffer holds a whole request, or enough to answer an error."""
    buf = conn.buf
    if not buf:
        return False
    if conn.head_end < 0:
        if buf[:1] in (b"\n", b"\r") and (buf[:2] == b"\r\n" or buf[:1] == b"\n"):
            return True  # an empty request line: the handler decides
        end = _head_end(buf, settings.max_header_bytes)
        if end < 0:
            return len(buf) > settings.max_header_bytes  # → 431
        conn.head_end = end
        if end > settings.max_header_bytes:
            return True
        length, coding, expect = _framing(bytes(buf[:end]))
        if expect:
            return True  # the client waits for "100 Continue" before sending the body
        if coding is not None:
            if coding.rsplit(b",", 1)[-1].strip() != b"chunked":
                return True  # → 400
            conn.chunk_pos = end
        elif length is not None:
            if not (length.isdigit() and len(length) < 20):
                return True  # → 400
            n = int(length)
            if n > settings.max_body_bytes:
                return True  # → 413, answered before the body is read
            conn.need = end + n
        else:
            return True  # no body
    if conn.need >= 0:
        return len(buf) >= conn.need
    if conn.chunk_pos >= 0:
        return _chunked_ready(conn, settings)
    return True


def _chunked_ready(conn: Connection, settings: Settings) -> bool:
    buf = conn.buf
    while True:
        pos = conn.chunk_pos
        nl = buf.find(b"\n", pos, pos + _CHUNK_LINE)
        if nl < 0:
            return len(buf) - pos >= _CHUNK_LINE  # an overlong size line: the handler answers 400
        digits = bytes(buf[pos:nl]).split(b";", 1)[0].strip()
        if not digits or digits.lstrip(b"0123456789abcdefABCDEF") or len(digits) > 16:
            return True  # malformed: the handler answers 400
        size = int(digits, 16)
        if size == 0:
            # Trailer lines up to a blank one.
            p = nl + 1
            while True:
                q = buf.find(b"\n", p)
                if q < 0:
                    return False
                if buf[p:q + 1] in (b"\r\n", b"\n"):
                    return True
                p = q + 1
        conn.chunk_total += size
        if conn.chunk_total > settings.max_body_bytes:
            return True  # → 413
        data_end = nl + 1 + size
        if len(buf) <= data_end:
            conn.chunk_total -= size
            return False
        after = buf.find(b"\n", data_end, data_end + _CHUNK_LINE)
        if after < 0:
            conn.chunk_total -= size
            return len(buf) - data_end >= _CHUNK_LINE
        conn.chunk_pos = after + 1


def peer_state(sock: socket.socket) -> str:
    """"open", "closed" or "data" (the client sent more: it is there) for a connected socket.

    Never blocks, whatever the socket's timeout, and works for any descriptor number
    (``poll``, not ``select``; the peek runs only once the socket is readable, since a
    socket with a timeout would otherwise wait for data).
    """
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN | select.POLLPRI)
        if not poller.poll(0):
            return "open"
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return "open"
    except (OSError, ValueError):
        return "closed"
    return "data" if data else "closed"


class _EpollPoller:
    """Linux: one-shot interest in epoll.  Arming from any thread is safe (``epoll_ctl`` is),
    so a pool thread re-arms a connection without waking the selector thread."""

    threadsafe = True

    def __init__(self, conns: dict[int, Connection]):
        self._ep = select.epoll()
        self._conns = conns
        self._fixed: dict[int, str] = {}

    def add_fixed(self, sock: socket.socket, tag: str) -> None:
        self._ep.register(sock.fileno(), select.EPOLLIN)
        self._fixed[sock.fileno()] = tag

    def remove_fixed(self, sock: socket.socket) -> None:
        try:
            self._ep.unregister(sock.fileno())
        except (OSError, ValueError):
            pass
        self._fixed.pop(sock.fileno(), None)

    def arm(self, conn: Connection) -> None:
        # Registration is the kernel's, per descriptor number, not per Connection: a
        # late arm of a closed connection can register its number after a new
        # connection got it.  So a closed connection is never armed, and a number that
        # turns out registered already (EEXIST) or not (ENOENT) is modified or registered
        # instead: the live connection's arm always takes effect.  Swallowing EEXIST
        # left a connection disarmed for good, and its next keep-alive request unread.
        if conn.mode == "closed":
            return
        flags = select.EPOLLIN | select.EPOLLONESHOT
        try:
            if conn.registered:
                try:
                    self._ep.modify(conn.fd, flags)
                except FileNotFoundError:
                    self._ep.register(conn.fd, flags)
            else:
                try:
                    self._ep.register(conn.fd, flags)
                except FileExistsError:
                    self._ep.modify(conn.fd, flags)
                conn.registered = True
        except (OSError, ValueError):
            pass  # closed meanwhile (the sweep or shutdown got there first)

    def forget(self, conn: Connection) -> None:
        if conn.registered:
            conn.registered = False
            try:
                self._ep.unregister(conn.fd)
            except (OSError, ValueError):
                pass

    def poll(self, timeout: float) -> list:
        out = []
        for fd, _ in self._ep.poll(timeout):
            tag = self._fixed.get(fd)
            if tag is None:
                tag = self._conns.get(fd)
            if tag is not None:
                out.append(tag)
        return out

    def close(self) -> None:
        self._ep.close()


class _SelectorPoller:
    """Elsewhere: ``selectors`` with one-shot emulated (a connection is unregistered when it
    fires); only the selector thread may arm, other threads queue the request for it."""

    threadsafe = False

    def __init__(self, conns: dict[int, Connection]):
        self._sel = selectors.DefaultSelector()

    def add_fixed(self, sock: socket.socket, tag: str) -> None:
        self._sel.register(sock, selectors.EVENT_READ, tag)

    def remove_fixed(self, sock: socket.socket) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def arm(self, conn: Connection) -> None:
        if not conn.registered and conn.mode != "closed":
            try:
                self._sel.register(conn.sock, selectors.EVENT_READ, conn)
                conn.registered = True
            except (KeyError, ValueError, OSError):
                pass

    def forget(self, conn: Connection) -> None:
        if conn.registered:
            conn.registered = False
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass

    def poll(self, timeout: float) -> list:
        out = []
        for key, _ in self._sel.select(timeout):
            if isinstance(key.data, Connection):
                self.forget(key.data)
            out.append(key.data)
        return out

    def close(self) -> None:
        self._sel.close()


def _spin_recv(sock: socket.socket, seconds: float) -> Optional[bytes]:
    """What *sock* receives within *seconds* of polling without sleeping; None if nothing.

    A closed-loop client's next request usually arrives within the window, and then no
    wake-up of this thread is needed (see ``Settings.spin_wait``).  Each read
    releases the GIL.
    """
    if sock.gettimeout() is None:  # a blocking descriptor: make the socket non-blocking
        sock.settimeout(0.0)
    # With any timeout the descriptor itself is non-blocking (Python waits with poll()
    # before each operation): a plain read returns at once, and the socket's timeout is
    # left as it is (two ioctl calls fewer per request than setting it to 0 and back).
    fd = sock.fileno()
    end = time.perf_counter() + seconds
    while True:
        try:
            return os.read(fd, _RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            if time.perf_counter() >= end:
                return None
            os.sched_yield()  # a peer waiting for this CPU gets it (see protocol.spin_poll)


class ConnectionServer:
    """Listening socket + selector thread + pool; see the module docstring.

    *handle* is called on a pool thread with a :class:`Connection` whose buffer
    holds a request; it must end by calling :meth:`done` (keep-alive or close) or
    :meth:`park`.

    Interest is one-shot: a connection is watched (armed) only while it waits for
    bytes or for a hang-up, and an event disarms it, so exactly one thread acts on
    it.  On Linux the thread that finishes with a connection re-arms it itself
    (``epoll_ctl`` is thread-safe): a keep-alive request costs one hand-over, from
    the selector thread to the pool.
    """

    def __init__(self, address: tuple[str, int], settings: Settings, handle: Callable[[Connection], None]):
        self.settings = settings
        self._handle = handle
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(settings.listen_backlog)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self.pool = Pool(settings.http_threads, settings.http_thread_idle_timeout)
        self._conns: dict[int, Connection] = {}
        self._poller: Any = _EpollPoller(self._conns) if hasattr(select, "epoll") else _SelectorPoller(self._conns)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._incoming: collections.deque = collections.deque()
        self._loop_thread: Optional[int] = None
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._listening_paused_until = 0.0
        self._closed = False
        self._local = threading.local()  # .linger: the connection this pool thread keeps
        # Seconds of the linger spent polling without sleeping (Settings.spin_wait), by one
        # pool thread at a time: the gate's holder.
        self._spin = min(settings.spin_window(), settings.keepalive_linger)
        self._spin_gate = threading.Lock()

    # ---------------------------------------------------------------- public
    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Run the selector loop until :meth:`shutdown`."""
        self._stopped.clear()
        self._loop_thread = threading.get_ident()
        try:
            self._poller.add_fixed(self.socket, "listen")
            self._poller.add_fixed(self._wake_r, "wake")
            next_sweep = 0.0
            while not self._stop.is_set():
                for item in self._poller.poll(min(poll_interval, _SWEEP_INTERVAL)):
                    if item == "listen":
                        self._accept()
                    elif item == "wake":
                        self._drain_wake()
                    elif isinstance(item, Connection):
                        self._readable(item)
                self._take_incoming()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + _SWEEP_INTERVAL
        finally:
            if not self._listening_paused_until:
                self._poller.remove_fixed(self.socket)
            self._poller.remove_fixed(self._wake_r)
            self._loop_thread = None
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the selector loop and wait for it (as ``socketserver``'s ``shutdown``)."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the listening socket, every connection and the pool."""
        if self._closed:
            return
        self._closed = True
        self.socket.close()
        self.pool.stop()
        for conn in list(self._conns.values()):
            self._close(conn)
        self._poller.close()
        self._wake_r.close()
        self._wake_w.close()

    def done(self, conn: Connection, keep_alive: bool, leftover: bytearray) -> None:
        """A job finished with *conn*: wait for its next request, or close it."""
        if not keep_alive or self._stop.is_set():
            self._close_from_job(conn)
            return
        conn.buf = leftover
        conn.reset_scan()
        now = time.monotonic()
        conn.deadline = now + (self.settings.header_timeout if leftover else self.settings.read_timeout)
        if leftover and request_ready(conn, self.settings):
            conn.mode = "busy"
            self.pool.submit(lambda: self._run_handler(conn))  # pipelined: the next one is here
            return
        if not leftover and self.settings.keepalive_linger > 0 and self.pool.may_linger():
            self._local.linger = conn  # the job's loop waits for the next request (_next_request)
            return
        self._to_selector(conn)

    def _to_selector(self, conn: Connection) -> None:
        """The selector reads *conn*'s next request (what is buffered is kept)."""
        try:
            # Before the mode says "read": from then on the selector may take the connection
            # and hand it to another job, whose socket timeout this must not undo.
            conn.sock.setblocking(False)  # the selector thread's recv must never wait
        except OSError:
            pass
        conn.mode = "read"
        self._arm(conn)

    def park(self, conn: Connection, on_done: Callable[[], None], on_gone: Callable[[], None]) -> Callable[..., None]:
        """Leave *conn* waiting without a thread; returns the callback that ends the wait.

        The selector watches the socket: if the client hangs up, *on_gone* runs on
        the pool.  Calling the returned callback (from any thread; it does not
        block) queues *on_done* at the front of the pool's queue; *on_done* must
        end with :meth:`done`.
        """
        waiter = (on_done, on_gone)
        with conn.lock:
            conn.waiter = waiter
            conn.mode = "watch"
        self._arm(conn)

        def finish(*_: Any) -> None:
            # Ends this park only: a late call (after the connection was resumed, answered
            # and parked again) must not end a later park of the same connection.
            with conn.lock:
                if conn.waiter is not waiter:
                    return
                conn.waiter = None
                if conn.mode in ("watch", "wait"):
                    conn.mode = "busy"
            self.pool.submit(lambda: self._run_waiter(conn, on_done), urgent=True)
        return finish

    # ---------------------------------------------------------------- arming
    def _arm(self, conn: Connection) -> None:
        if self._poller.threadsafe or threading.get_ident() == self._loop_thread:
            self._poller.arm(conn)
        else:
            self._incoming.append(("arm", conn))
            self._wake()

    def _close_from_job(self, conn: Connection) -> None:
        if self._poller.threadsafe:
            self._close(conn)
        else:
            self._incoming.append(("close", conn))
            self._wake()

    # ---------------------------------------------------------------- loop
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already awake (buffer full) or closing

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the pending client waits in the backlog until one frees.
                    log.warning("cannot accept a connection: %s", exc)
                    self._listening_paused_until = time.monotonic() + _EMFILE_PAUSE
                    self._poller.remove_fixed(self.socket)  # the sweep adds it again
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not TCP
            sock.setblocking(False)
            conn = Connection(sock, address)
            conn.mode = "read"
            conn.deadline = time.monotonic() + self.settings.read_timeout
            self._conns[conn.fd] = conn
            self._poller.arm(conn)

    def _readable(self, conn: Connection) -> None:
        mode = conn.mode
        if mode == "read":
            try:
                data = conn.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                self._poller.arm(conn)  # a stale event (the descriptor was reused)
                return
            except OSError:
                self._close(conn)
                return
            if not data:
                self._close(conn)
                return
            now = time.monotonic()
            if not conn.buf:
                conn.deadline = now + self.settings.header_timeout  # a request has begun
            conn.buf += data
            if request_ready(conn, self.settings):
                conn.mode = "busy"
                self.pool.submit(lambda: self._run_handler(conn))
                return
            if conn.head_end >= 0:
                conn.deadline = now + self.settings.read_timeout  # the body may not stall longer
            self._poller.arm(conn)
        elif mode == "watch":
            with conn.lock:
                if conn.mode != "watch":
                    return  # the prediction ended meanwhile: its answer owns the connection
                state = peer_state(conn.sock)
                if state == "open":
                    self._poller.arm(conn)
                    return
                # "data": pipelining, the client is there and its bytes wait in the socket.
                conn.mode = "wait"
                waiter = conn.waiter
                if state == "closed":
                    conn.gone = True
            if state == "closed" and waiter is not None:
                self.pool.submit(waiter[1])
        # Any other mode: a job owns the connection; the one-shot event is simply dropped.

    def _run_handler(self, conn: Connection) -> None:
        self._run_job(conn, lambda: self._handle(conn), "error on the connection from %s")

    def _run_waiter(self, conn: Connection, on_done: Callable[[], None]) -> None:
        self._run_job(conn, on_done, "error answering on the connection from %s")

    def _run_job(self, conn: Connection, job: Callable[[], None], failure: str) -> None:
        """Run *job* on this pool thread, then the connection's next requests while they
        come back within ``Settings.keepalive_linger`` (see :meth:`done`)."""
        while True:
            self._local.linger = None
            try:
                if conn.sock.gettimeout() != self.settings.read_timeout:  # an ioctl, even when unchanged
                    conn.sock.settimeout(self.settings.read_timeout)
                job()
            except Exception:
                log.exception(failure, conn.address)
                self._close_from_job(conn)
                return
            if self._local.linger is not conn or not self._next_request(conn):
                return
            job, failure = (lambda: self._handle(conn)), "error on the connection from %s"

    def _next_request(self, conn: Connection) -> bool:
        """Wait up to ``Settings.keepalive_linger`` for *conn*'s next request on this thread.

        True when it is buffered and this thread answers it; otherwise the connection
        went to the selector (nothing came, or only part of a request), to the back of
        the pool's queue (other requests wait for a thread: they go first), or was closed.
        """
        self._local.linger = None
        data: Optional[bytes] = None
        try:
            linger = self.settings.keepalive_linger
            spin = self._spin
            waiting_since = time.perf_counter()
            if spin and conn.quick and self.may_spin() and self._spin_gate.acquire(False):
                try:
                    data = _spin_recv(conn.sock, spin)
                finally:
                    self._spin_gate.release()
                linger -= spin
            if data is None and linger > 0:
                conn.sock.settimeout(linger)
                data = conn.sock.recv(_RECV_BYTES)
            if spin:
                # Twice the window, as the worker judges its requests (worker.main).
                conn.quick = time.perf_counter() - waiting_since <= 2 * spin
        except (TimeoutError, BlockingIOError, InterruptedError):
            data = None
            conn.quick = False
        except OSError:
            self._close_from_job(conn)
            return False
        if data == b"":
            self._close_from_job(conn)  # the client closed its end
            return False
        if data:
            conn.buf += data
            conn.deadline = time.monotonic() + self.settings.header_timeout  # a request has begun
            if request_ready(conn, self.settings):
                if self.pool.queued() or self._stop.is_set():
                    conn.mode = "busy"
                    self.pool.submit(lambda: self._run_handler(conn))
                    return False
                return True
        self._to_selector(conn)
        return False

    def _take_incoming(self) -> None:
        while self._incoming:
            action, conn = self._incoming.popleft()
            if conn.mode == "closed":
                continue
            if action == "arm":
                if conn.mode in ("read", "watch"):
                    self._poller.arm(conn)
            elif action == "close":
                self._close(conn)

    def on_sweep(self, now: float) -> None:
        """Called on the selector thread at every sweep (subclasses add their own deadlines)."""

    def may_spin(self) -> bool:
        """Whether a pool thread may spin for a connection's next request now (see
        ``Settings.spin_wait``); subclasses say no while the CPU is needed elsewhere."""
        return True

    def _sweep(self, now: float) -> None:
        try:
            self.on_sweep(now)
        except Exception:
            log.exception("error in a periodic HTTP check")
        if self._listening_paused_until and now >= self._listening_paused_until:
            self._listening_paused_until = 0.0
            self._poller.add_fixed(self.socket, "listen")
        for conn in list(self._conns.values()):
            if conn.mode == "read" and now >= conn.deadline:
                if conn.buf:
                    log.info("closing the connection from %s: request not received within the time limit",
                             conn.address)
                self._close(conn)

    def _close(self, conn: Connection) -> None:
        with conn.lock:  # the selector and a job may both close it: once only
            if conn.mode == "closed":
                return
            conn.mode = "closed"
        self._poller.forget(conn)
        if self._conns.get(conn.fd) is conn:  # its number may already be a new connection's
            del self._conns[conn.fd]
        try:
            conn.sock.close()
        except OSError:
            pass
