"""Frames and messages between the parent (the engine) and the worker subprocess.

Transport
---------
The parent makes every channel with :func:`multiprocessing.connection.Pipe`
(a Unix ``socketpair``), keeps one end and hands the other end's file
descriptor to the child with ``subprocess.Popen(pass_fds=...)``; the child wraps
it in :class:`multiprocessing.connection.Connection`.  There is one **control**
channel and one channel per **slot** (a slot runs at most one prediction at a
time), so a flood of log lines on one slot never delays a cancel (control) or
another slot's output.

Framing is ``Connection.send_bytes``/``recv_bytes`` (a length-prefixed frame);
each frame holds exactly one compact UTF-8 JSON object with a ``"type"`` key.
JSON is written without NaN/Infinity (``allow_nan=False``) so whatever one side
sends, the other side and any HTTP client can parse.  A Connection is not safe
for concurrent writers, so every sender holds the channel's lock (see
:class:`Channel`); reads happen on one thread per side.

Payloads larger than ``Settings.max_inline_ipc_bytes`` never travel in a frame:
the sender writes them to a file inside the prediction's temporary folder and
sends the path (``input_file`` / ``output_file``); the receiver reads and
deletes that file.  Blocking sends give backpressure: a worker that produces
faster than the parent consumes is slowed down instead of growing memory.

Message catalogue
-----------------
Control channel, parent → worker:

``init``         first message, exactly once: ``ref``, ``mode`` ("predict"/"train"),
                 ``num_slots`` (channels opened), ``max_concurrency`` (None or the
                 COG_MAX_CONCURRENCY / cog.yaml value), ``settings`` (the limits the
                 worker needs, see ``worker.main.WorkerSettings``).
``cancel``       ``id``: cancel that prediction (ignored if it is not known).
``healthcheck``  ``id``: run the user's healthcheck; answered by ``healthcheck_result``.
``shutdown``     stop now; answered by ``shutting_down`` then exit 0.

Control channel, worker → parent:

``log``                 ``source`` ("stdout"/"stderr"), ``data`` (whole lines): output
                        during setup, or with no running owner (orphan output).
``worker_log``          ``level`` ("debug"/"info"/"warning"/"error"), ``message``:
                        minicog's own diagnostics from inside the worker.
``schema``              ``schema`` (OpenAPI dict or null): sent once the model is
                        loaded, *before* ``setup()`` runs (the schema comes from the
                        signatures), so a caller can reject bad input without
                        waiting for setup; ``ready`` repeats the same document.
``ready``               setup succeeded: ``num_slots`` (slots the worker serves,
                        ≤ the channels opened; the parent closes the rest),
                        ``schema`` (OpenAPI dict or null), ``streaming`` (bool),
                        ``is_async`` (bool), ``has_healthcheck`` (bool).
``setup_failed``        ``error``: load or setup() failed; the traceback was sent as
                        ``log`` lines before it.  The worker exits afterwards.
``healthcheck_result``  ``id``, ``status`` ("healthy"/"unhealthy"), ``error`` (str or null).
``dropped_logs``        ``count``: log messages the worker had to drop.  Reserved: the
                        current worker blocks instead of dropping (backpressure), so
                        it never sends it; the parent logs a warning if it arrives.
``shutting_down``       answer to ``shutdown``; the worker exits right after.
``fatal``               ``reason``: the worker hit an internal error and exits.

Slot channel, parent → worker:

``predict``   ``id``, ``input`` (object) *or* ``input_file`` (path of a JSON spill),
              ``context`` (dict[str, str]), ``tmp_dir`` (the prediction's folder,
              owned by the parent; the worker writes downloads into ``inputs/`` and
              file outputs into ``outputs/``).
``cancel``    ``id``: a copy of the run's first control ``cancel``, sent right after
              it.  A sync worker's main thread reads its slot itself, so this copy
              reaches it even when the I/O thread read the control cancel before the
              prediction was registered; a copy for a finished prediction is ignored.

Slot channel, worker → parent (for the prediction running on that slot):

``log``          ``source``, ``data``: one or more whole lines (the last chunk of a
                 prediction may lack its newline: partial lines are flushed at the end).
``output``       ``index``, ``value`` (a JSON value).
``output_file``  ``index``, ``path``: a JSON value too big to inline, spilled to a file.
``file``         ``index``, ``path``, ``mime`` (str or null): a file output.
``metric``       ``name``, ``value``, ``mode`` ("replace"/"increment"/"append").
``done``         ``id``, ``is_stream`` (bool), and
                 ``output`` (a JSON value) for a sync prediction whose single,
                 non-stream output was small enough to inline: it stands for an
                 ``output`` message with ``index`` 0 right before the ``done``.
``failed``       ``id``, ``error``.
``canceled``     ``id``.

A terminal message may carry ``tmp: false``: the worker knows that nothing made
the prediction's ``tmp_dir`` (no download, no spilled input or output, no file
written for an output), so the parent has no folder to remove.  Without it the
folder may exist.

Ordering guarantees
-------------------
* ``init`` is the first control message; ``ready`` or ``setup_failed`` is the last
  setup message, and slot channels carry nothing before ``ready``.
* ``schema`` comes at most once per worker, after the model file was imported and
  before ``setup()`` (a load failure sends ``setup_failed`` without it).
* On a slot, all of a prediction's ``log``/``output``/``output_file``/``file``/
  ``metric`` messages come before its terminal message (``done``/``failed``/
  ``canceled``), in the order they were produced; ``index`` counts from 0.
* The terminal message is sent only after the prediction's log writers and the
  captured fd 1/2 output have been flushed, and after the worker no longer needs
  the slot: the parent frees the slot when the terminal message arrives (there is
  no separate "idle" message), so a client that waited for its answer can always
  send the next request.
* Output with no owner (orphan threads/tasks, fd output while zero or several
  predictions run) goes to the control ``log`` message, never to a slot.
* The parent sends a ``cancel`` only after the ``predict`` it refers to, and the
  worker reads its slot channels before its control channel, so a cancel never
  arrives before its prediction.  A cancel for a prediction the worker has
  already finished (it crossed the terminal message) is ignored, so it cannot
  cancel a later prediction that reuses the id.
"""

from __future__ import annotations

import json
import json.encoder
import os
import struct
import threading
import time
from typing import Any, Iterator, Optional

__all__ = [
    "send", "recv", "dumps", "loads", "Channel", "ProtocolError",
    "done_message", "CONTROL_TO_WORKER", "CONTROL_TO_PARENT", "SLOT_TO_WORKER", "SLOT_TO_PARENT", "TERMINAL",
]

CONTROL_TO_WORKER = frozenset({"init", "cancel", "healthcheck", "shutdown"})
CONTROL_TO_PARENT = frozenset({
    "log", "worker_log", "schema", "ready", "setup_failed", "healthcheck_result", "dropped_logs",
    "shutting_down", "fatal",
})
SLOT_TO_WORKER = frozenset({"predict"})
SLOT_TO_PARENT = frozenset({"log", "output", "output_file", "file", "metric", "done", "failed", "canceled"})
#: The slot messages that end a prediction.
TERMINAL = frozenset({"done", "failed", "canceled"})


class ProtocolError(Exception):
    """A frame that is not a JSON object with a string ``type``."""


# Made once: json.dumps with options builds a JSONEncoder per call, and json.loads of
# bytes detects their encoding first (frames are always UTF-8); ~0.6 us per message
# each, a few messages per prediction on both sides.  Both are stateless (thread-safe).
# (Its own, not encoding.COMPACT_JSON: this module imports nothing of minicog.)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_DECODER = json.JSONDecoder()


def dumps(msg: dict) -> bytes:
    """Encode one message as compact UTF-8 JSON (no NaN/Infinity)."""
    return _ENCODER.encode(msg).encode("utf-8")


#: The JSON string literal of a str, as dumps() writes it (non-ASCII kept); in C.
_QUOTE = json.encoder.encode_basestring


def predict_message(prediction_id: str, tmp_dir: str, *, input_json: Optional[bytes] = None,
                    context: Optional[dict] = None, input_files: Optional[list] = None,
                    input_file: Optional[str] = None) -> bytes:
    """The ``predict`` message, encoded: the bytes :func:`dumps` gives for its dict
    (``type``, ``id``, ``context``, ``tmp_dir``, then ``input_files``, ``input`` and
    ``input_file`` when given), without the encoder's steps for the fixed parts.

    *input_json* is the input already encoded (:func:`dumps`); an empty context and
    an empty input, the usual case, are written without the encoder at all.  Raises
    ``ValueError`` (``UnicodeEncodeError``) for an id or folder holding a lone
    surrogate, and ``TypeError``/``ValueError`` for a context that is not JSON.
    """
    parts = [b'{"type":"predict","id":', _QUOTE(prediction_id).encode("utf-8"),
             b',"context":', dumps(context) if context else b"{}",
             b',"tmp_dir":', _QUOTE(tmp_dir).encode("utf-8")]
    if input_files:
        parts.append(b',"input_files":')
        parts.append(dumps(input_files))  # type: ignore[arg-type]
    if input_json is not None:
        parts.append(b',"input":')
        parts.append(input_json)
    if input_file is not None:
        parts.append(b',"input_file":')
        parts.append(_QUOTE(input_file).encode("utf-8"))
    parts.append(b"}")
    return b"".join(parts)


def done_message(prediction_id: str, is_stream: bool, *, tmp: bool = True,
                 output: Optional[bytes] = None) -> bytes:
    """The ``done`` message of *prediction_id*, encoded: the bytes :func:`dumps` gives
    for its dict, without the encoder's steps (one per prediction, in the worker).

    ``tmp=False`` adds ``"tmp": false``; *output* (JSON already) is the ``output`` field.
    """
    parts = [b'{"type":"done","is_stream":', b"true" if is_stream else b"false",
             b',"id":', _QUOTE(prediction_id).encode("utf-8")]
    if not tmp:
        parts.append(b',"tmp":false')
    if output is not None:
        parts.append(b',"output":')
        parts.append(output)
    parts.append(b"}")
    return b"".join(parts)


def loads(data: bytes) -> dict:
    """Decode one frame; raise :class:`ProtocolError` unless it is an object with a ``type``."""
    try:
        # As json.loads decodes UTF-8 bytes (a UnicodeDecodeError is a ValueError).
        msg = _DECODER.decode(data.decode("utf-8", "surrogatepass"))
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"frame is not a message object: {data[:200]!r}")
    return msg


#: Held messages are joined into writes of at most this many bytes (one socket
#: buffer's worth); a larger message is sent on its own.
_BATCH_BYTES = 65536
_LENGTH = struct.Struct("!i")


def frame(data: bytes) -> bytes:
    """*data* framed as ``Connection.send_bytes`` frames it (below 2 GiB).

    multiprocessing.connection writes a 4-byte big-endian signed length, then the
    bytes, and ``recv_bytes`` reads exactly that; several frames written back to
    back are read as several messages.
    """
    return _LENGTH.pack(len(data)) + data


def spin_poll(poller: Any, seconds: float) -> bool:
    """Poll *poller* without sleeping for up to *seconds*; True once it reports an event.

    *poller* is a ``select.poll`` or ``select.epoll`` object holding the channels to
    watch.  A caller that expects its peer's message soon spins this long before it
    blocks.  Why: on virtual machines whose idle CPUs halt (no idle polling in the
    guest), waking a thread that sleeps on another CPU costs the waker's system call
    100-300 us of inter-processor interrupt, four times per prediction.  A peer that
    answers within the window finds this thread running and wakes nobody.  The
    window is ``Settings.spin_wait``; each ``poll(0)`` releases the GIL, so the
    other threads of the process run meanwhile.
    """
    end = time.perf_counter() + seconds
    while True:
        if poller.poll(0):
            return True
        if time.perf_counter() >= end:
            return False
        # A peer waiting for this CPU gets it (at once if none: no other task runs here).
        os.sched_yield()


def send(conn: Any, msg: dict) -> None:
    """Send one message on a ``multiprocessing.connection.Connection``.

    Not thread-safe by itself: concurrent senders use a :class:`Channel`.
    """
    conn.send_bytes(dumps(msg))


def recv(conn: Any) -> dict:
    """Receive one message; ``EOFError``/``OSError`` when the peer is gone."""
    return loads(conn.recv_bytes())


#: Bytes :func:`recv_available` asks for in its first read (a socket buffer's worth).
_AVAILABLE_BYTES = 65536
_LONG_LENGTH = struct.Struct("!Q")


def _read_exact(fd: int, size: int) -> bytes:
    parts = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            raise OSError("got end of file during message")
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def recv_available(conn: Any) -> Iterator[dict]:
    """Every whole message waiting on *conn*, at least one (blocks for it), decoded in turn.

    The frames :func:`recv` reads one by one with two reads each (the length, then
    the bytes) come here in one read when the peer wrote them together, as a
    worker writes a sync prediction's output and end (:meth:`Channel.release`).
    A frame cut by the end of that read is read to its end, so the next reader,
    this function or :func:`recv`, starts on a frame boundary.  The frames are all
    read before the first is decoded; one that is not a message raises
    :class:`ProtocolError` after those before it were yielded.
    """
    fd = conn.fileno()
    data = os.read(fd, _AVAILABLE_BYTES)
    if not data:
        raise EOFError
    bodies = []
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 4:
            data = data[pos:] + _read_exact(fd, 4 - (end - pos))
            pos, end = 0, len(data)
        size = _LENGTH.unpack_from(data, pos)[0]
        pos += 4
        if size == -1:  # more than 2 GiB: an 8-byte length follows (multiprocessing's framing)
            if end - pos < 8:
                data = data[pos:] + _read_exact(fd, 8 - (end - pos))
                pos, end = 0, len(data)
            size = _LONG_LENGTH.unpack_from(data, pos)[0]
            pos += 8
        if size < 0:
            raise ProtocolError(f"negative frame length {size}")
        if end - pos < size:
            body = data[pos:] + _read_exact(fd, size - (end - pos))
            pos = end
        else:
            body = data[pos:pos + size]
            pos += size
        bodies.append(body)
    return (loads(body) for body in bodies)


class Channel:
    """A connection plus the lock its writers share.

    ``send`` blocks while the peer's socket buffer is full (backpressure).  After
    a write error the channel is marked ``broken`` and later sends raise at once,
    so a dead peer costs one exception, not one per message.
    """

    def __init__(self, conn: Any, name: str = "channel"):
        self.conn = conn
        self.name = name
        self.lock = threading.Lock()
        self.broken: Optional[BaseException] = None
        self._held: Optional[list[bytes]] = None

    def send(self, msg: dict) -> None:
        self.send_raw(dumps(msg))

    def send_raw(self, data: bytes) -> None:
        """Send an already encoded message (one JSON object, see :func:`dumps`)."""
        with self.lock:
            if self.broken is not None:
                raise BrokenPipeError(f"{self.name} is broken: {self.broken}")
            if self._held is not None:
                self._held.append(data)
                return
            self._send_locked(data)

    def _send_locked(self, data: bytes) -> None:
        try:
            if len(data) >= _BATCH_BYTES:
                self.conn.send_bytes(data)
                return
            # A small frame written directly, as send_bytes frames it (see frame()): one
            # system call without send_bytes' half-dozen Python-level steps.
            fd = self.conn._handle  # what fileno() returns, None once closed
            if fd is None:
                raise OSError("handle is closed")
            buf = _LENGTH.pack(len(data)) + data
            sent = os.write(fd, buf)
            if sent < len(buf):
                view = memoryview(buf)[sent:]
                while view:
                    view = view[os.write(fd, view):]
        except (OSError, ValueError) as exc:
            self.broken = exc
            raise

    def hold(self) -> None:
        """Keep the messages sent from now on until :meth:`release`.

        The worker holds a sync prediction's last messages (its output, the last
        log lines, the terminal message) and releases them back to back: the
        parent's reader then finds them together and wakes once, not once for
        the output and again for the terminal message.  The order is unchanged.
        """
        with self.lock:
            if self._held is None:
                self._held = []

    def release(self) -> None:
        """Send the held messages, in order, and stop holding.

        Small messages go out in one write (see :func:`frame`): the bytes on the
        wire are the same as with one ``send_bytes`` each, for one system call.
        """
        with self.lock:
            held, self._held = self._held, None
            if self.broken is not None and held:
                raise BrokenPipeError(f"{self.name} is broken: {self.broken}")
            batch: list[bytes] = []
            size = 0
            for data in held or ():
                if size + len(data) + 4 > _BATCH_BYTES:
                    self._flush_batch(batch)
                    batch, size = [], 0
                if len(data) + 4 > _BATCH_BYTES:
                    self._send_locked(data)
                else:
                    batch.append(data)
                    size += len(data) + 4
            self._flush_batch(batch)

    def _flush_batch(self, batch: list[bytes]) -> None:
        if len(batch) == 1:
            self._send_locked(batch[0])
        elif batch:
            buf = memoryview(b"".join(map(frame, batch)))
            try:
                fd = self.conn.fileno()
                while buf:
                    buf = buf[os.write(fd, buf):]
            except (OSError, ValueError) as exc:
                self.broken = exc
                raise

    def recv(self) -> dict:
        return recv(self.conn)

    def fileno(self) -> int:
        return self.conn.fileno()

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
