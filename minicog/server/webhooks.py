"""Webhook delivery in the background: coglet's filter, throttle and retry rules,
Standard Webhooks signatures, a durable outbox for terminal webhooks, and a
bounded pool of delivery threads.

A prediction created with a ``webhook`` URL gets a :class:`WebhookSender`.  The
prediction record calls :meth:`WebhookSender.send` on each transition (``start``,
``output``, ``logs``, ``completed``); the call only decides whether the event is
sent (``webhook_events_filter``, and the throttle: a non-terminal ``start``/``logs``
event is dropped unless ``Settings.throttle_response_interval`` seconds have passed
since the last webhook sent, ``output`` is never throttled) and queues the
payload.  So:

* a dead or slow receiver never holds a slot, delays a cancel or blocks a
  response: the prediction's threads only append to a list;
* events of one prediction arrive in order (a sender has at most one delivery
  step scheduled or running at a time), and when the terminal event is queued
  any ``output``/``logs`` events still waiting are dropped (the terminal snapshot
  contains everything they carried; a waiting ``start`` is kept), so a slow
  receiver does not make the terminal webhook wait behind a backlog;
* a receiver slower than the model cannot make the queue grow without bound:
  beyond ``Settings.webhook_queue_limit`` waiting events the oldest non-terminal
  one is dropped (each payload is a full snapshot, so nothing is lost but an
  intermediate state).

Threads.  Deliveries run on one :class:`~minicog.server.timers.TimerPool` per
dispatcher: a heap of (due time, step) served by at most
``Settings.webhook_workers`` threads, started on demand and ended after
``Settings.webhook_pool_idle_timeout`` idle seconds.  A
retry waiting for its backoff is an entry in the heap, not a sleeping thread, so
2,000 terminal webhooks being retried cost 2,000 small objects, not 2,000 threads.

Only ``http``/``https`` URLs are posted to: the URL comes from the client, and
urllib would otherwise open ``file:`` (``file:///dev/zero`` reads forever),
``ftp:`` or ``data:`` URLs; any other URL is logged and given up at once, never
retried.  A receiver's answer is read up to ``Settings.webhook_max_response_bytes``
(only its status matters), so an endless body cannot hold a delivery thread.

Only the terminal event is retried: on transport errors and on 429/500/502/503/504,
up to ``Settings.webhook_max_retries`` times, waiting
``webhook_backoff_base * 2 ** min(k, webhook_backoff_max_exponent)`` seconds
before retry *k* (0.2 s, 0.4 s ... 102.4 s, Cog's schedule); each attempt is
bounded by ``Settings.webhook_timeout``.  Non-terminal failures are logged and
forgotten, as coglet does.  Delivery never changes the prediction.

Signatures (the Standard Webhooks scheme Replicate uses).  Every webhook carries
``webhook-id`` (``msg_`` + 32 hex digits, one per event, the same on every retry
and after a restart) and ``webhook-timestamp`` (Unix seconds of the attempt).
With ``Settings.webhook_secret`` (``whsec_`` + base64 of the key) it also carries
``webhook-signature: v1,<base64 of HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``.

Outbox (``Settings.webhook_outbox``, a directory).  A terminal webhook is kept
there - rendered body and delivery metadata - from the end of the prediction
until it is delivered or given up.  The outbox is a write-ahead log
(:class:`Outbox`): records appended to segment files, each checked by length and
CRC so a write cut short is recognised (appending is atomic), marked done in
place once delivered, a segment deleted when all its records are done.  Two
steps per webhook:

1. *appended*: tens of microseconds, no disk wait (the kernel has the data once
   ``write`` returns, so a killed process loses nothing).  The append is handed
   to a small pool (``Settings.webhook_outbox_writers`` threads), never done on
   the orchestrator's thread; the record's
   :meth:`~minicog.server.prediction.Prediction.wait` calls
   :meth:`WebhookSender.wait_durable`, which appends on the waiting thread if no
   writer has started on it yet, so a sync response never shows a result whose
   webhook a killed process could lose, and pays no thread hand-over.
2. *synced*: one ``fdatasync`` covers every record appended since the previous
   one (group commit: one disk flush for a burst of webhooks, where a file per
   webhook cost two fsyncs each and capped delivery at ~250/s on the machine
   measured), and only then is the first attempt made.  A power loss between a
   sync response and that flush can thus lose a webhook whose result the client
   has already seen; a killed process cannot.

:meth:`WebhookDispatcher.start` delivers what a previous process left (same
``webhook-id``, so receivers can deduplicate; the retry schedule starts over).
Delivery is therefore at least once: a crash between a receiver's 2xx and the
record being marked done sends that webhook again.  One directory serves one
process at a time (an ``flock`` on ``DIR/.lock`` enforces it).

Payloads are :class:`~minicog.server.outputs.Body` objects streamed from disk
(a 100 MB file output is not materialised in memory), re-rendered per attempt,
or read back from the outbox.

:class:`WebhookDispatcher` (one per service) creates senders and knows which
terminal webhooks are still pending (:meth:`WebhookDispatcher.pending`), so a
shutdown can wait for them within the grace period and log the ones it has to
give up on (coglet drops them silently).
"""

from __future__ import annotations

import base64
import binascii
import errno
import functools
import hashlib
import hmac
import http.client
import json
import logging
import os
import secrets
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from typing import Any, Callable, Iterable, Iterator, Optional

from minicog._version import __version__
from minicog.console import redact_text, redact_url
from minicog.engine.run import Latch
from minicog.server.outputs import Body, render_json
from minicog.server.timers import TimerPool
from minicog.settings import Settings

__all__ = ["WebhookDispatcher", "WebhookSender", "Signer", "Outbox", "EVENTS", "RETRY_STATUSES",
           "USER_AGENT", "parse_secret"]

log = logging.getLogger("minicog.webhooks")

EVENTS = ("start", "output", "logs", "completed")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = f"minicog/{__version__}"
_READ_CHUNK = 256 * 1024  # bytes per read when hashing or sending an outbox file
#: Terminal bodies up to this many bytes (without file outputs) written to the outbox are
#: also kept in memory, so attempts do not read them back from disk.
_INLINE_BODY_BYTES = 64 * 1024


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A webhook is a POST of a snapshot; following a redirect would turn it into a GET.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


class _NotHTTP(ValueError):
    """The webhook URL is not an http(s) URL: nothing is sent, nothing retried."""


# ------------------------------------------------------------------- signatures
def parse_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional); ValueError if malformed."""
    text = secret.strip()
    if text.startswith("whsec_"):
        text = text[len("whsec_"):]
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not whsec_ followed by base64") from None
    if not key:
        raise ValueError("empty key")
    return key


class Signer:
    """Standard Webhooks ``v1`` signatures: base64(HMAC-SHA256(key, "id.timestamp.body"))."""

    def __init__(self, secret: str):
        self._key = parse_secret(secret)

    def sign(self, msg_id: str, timestamp: int, chunks: Iterable[bytes]) -> str:
        mac = hmac.new(self._key, f"{msg_id}.{timestamp}.".encode("ascii"), hashlib.sha256)
        for chunk in chunks:
            mac.update(chunk)
        return "v1," + base64.b64encode(mac.digest()).decode("ascii")


_NO_HEADERS: dict[str, str] = {}
_EVENT_SETS: dict[frozenset, frozenset] = {}


def _event_set(events: Iterable[str]) -> frozenset:
    """One shared frozenset per distinct filter (there are few): not one per sender."""
    key = frozenset(events)
    return _EVENT_SETS.setdefault(key, key) if len(_EVENT_SETS) < 64 else key


def new_webhook_id() -> str:
    return "msg_" + secrets.token_hex(16)


# ----------------------------------------------------------------------- outbox
class _Segment:
    """One append-only file of the outbox, open while it holds pending webhooks."""

    __slots__ = ("seq", "path", "fd", "size", "live")

    def __init__(self, seq: int, path: str, fd: int, size: int):
        self.seq, self.path, self.fd, self.size, self.live = seq, path, fd, size, 0


class OutboxEntry:
    """Where one terminal webhook lives in the outbox."""

    __slots__ = ("meta", "segment", "record", "offset", "length")

    def __init__(self, meta: dict, segment: _Segment, record: int, offset: int, length: int):
        #: ``webhook_id``, ``prediction_id``, ``url``, ``headers``, ``created`` (Unix seconds).
        self.meta = meta
        self.segment, self.record, self.offset, self.length = segment, record, offset, length


class Outbox:
    """Terminal webhooks on disk until delivered: a write-ahead log (see the module docstring).

    The directory holds ``segment-<16 hex digits>.log`` files, appended to and never
    rewritten but for one status byte per record.  A record is::

        b"MCWH"  status (b"P" pending, b"D" done)  u32 metadata length  u64 body length
        metadata (JSON: webhook_id, prediction_id, url, headers, created)  body
        u32 CRC-32 of metadata + body

    (integers big-endian).  A record is valid only complete with a matching CRC, so
    a write cut short by a crash is recognised and ignored: appending is atomic.
    Delivered records get status ``D`` in place; a segment whose records are all
    done is deleted once a newer segment takes the appends.  A process never appends
    to a segment an earlier process left: recovery reads them, and a new process
    starts a new segment.
    """

    MAGIC = b"MCWH"
    _HEAD = struct.Struct(">4scIQ")
    _CRC = struct.Struct(">I")
    PREFIX, SUFFIX = "segment-", ".log"

    def __init__(self, directory: str, segment_bytes: int = 64 * 1024 * 1024):
        self.directory = os.path.abspath(directory)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_fd: Optional[int] = None
        self._segments: dict[int, _Segment] = {}
        # Two segments take appends in turn: sync() switches the appends to the other one
        # and flushes the one just left, so an append never waits behind a flush of the
        # page it writes to (on the machine measured, appending to a file being fdatasync'ed
        # waited up to 3 ms at the 99th percentile; switching brought that to ~0.1 ms).
        self._active: list[Optional[_Segment]] = [None, None]
        self._turn = 0
        self._next_seq = 1
        self._unsynced: set[int] = set()  # segments appended to since the last sync
        self._dir_unsynced = False  # a segment was created since the last directory fsync

    # ---------------------------------------------------------------- lifecycle
    def open(self) -> list[OutboxEntry]:
        """Create the directory, take its lock, read what earlier processes left.

        Returns the pending entries, oldest first.  OSError if the directory is
        unusable or another live process holds it.
        """
        import fcntl  # POSIX only, as the rest of the server; imported where needed
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(exc.errno, "the outbox is in use by another process") from None
            raise
        self._lock_fd = fd
        pending: list[OutboxEntry] = []
        for seq, path in self._segment_files(self.directory):
            self._next_seq = max(self._next_seq, seq + 1)
            seg_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            seg = _Segment(seq, path, seg_fd, os.fstat(seg_fd).st_size)
            found, torn = self._read_segment(seg)
            if torn:
                log.warning("webhook outbox: %d byte(s) of an unfinished record at the end of %s ignored "
                            "(a write cut short by a crash)", torn, path)
            seg.live = len(found)
            if found:
                self._segments[seq] = seg
                pending.extend(found)
            else:
                os.close(seg_fd)
                self._unlink(path)
        return pending

    def close(self) -> None:
        """Close the segments (deleting those with nothing pending) and release the lock."""
        with self._lock:
            for seg in self._segments.values():
                os.close(seg.fd)
                if seg.live <= 0:
                    self._unlink(seg.path)
            self._segments.clear()
            self._active = [None, None]
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    # -------------------------------------------------------------------- writes
    def append(self, webhook_id: str, prediction_id: str, url: str, headers: dict[str, str], body: Any) -> OutboxEntry:
        """Append one terminal webhook (not yet fsynced: :meth:`sync` does that, in batches)."""
        meta = {"webhook_id": webhook_id, "prediction_id": prediction_id, "url": url, "headers": headers,
                "created": time.time()}
        meta_bytes = json.dumps(meta, ensure_ascii=True).encode("ascii")
        head = self._HEAD.pack(self.MAGIC, b"P", len(meta_bytes), body.length)
        with self._lock:
            seg = self._active[self._turn]
            if seg is None or seg.size >= self.segment_bytes:
                seg = self._active[self._turn] = self._new_segment()
            record = seg.size
            crc = zlib.crc32(meta_bytes)
            written = 0
            try:
                _write_all(seg.fd, head + meta_bytes)
                for chunk in body.chunks():
                    crc = zlib.crc32(chunk, crc)
                    written += len(chunk)
                    _write_all(seg.fd, chunk)
                if written != body.length:
                    raise OSError(f"the body changed while written ({written} of {body.length} bytes)")
                _write_all(seg.fd, self._CRC.pack(crc))
            except BaseException:
                # Leave no half record behind: later records must stay readable.
                os.ftruncate(seg.fd, record)
                os.lseek(seg.fd, record, os.SEEK_SET)
                raise
            seg.size = record + len(head) + len(meta_bytes) + body.length + self._CRC.size
            seg.live += 1
            self._unsynced.add(seg.seq)
        return OutboxEntry(meta, seg, record, record + len(head) + len(meta_bytes), body.length)

    def sync(self) -> None:
        """Make every record appended before the call durable: switch the appends to the
        other active segment, fdatasync the segments written to (and the directory if it
        gained a segment); then delete the segments whose webhooks are all done."""
        with self._lock:
            self._turn ^= 1
            writing = self._active[self._turn]
            targets = [self._segments[s] for s in self._unsynced if s in self._segments and self._segments[s] is not writing]
            self._unsynced.difference_update(seg.seq for seg in targets)
            dir_too, self._dir_unsynced = self._dir_unsynced, False
        # Outside the lock: appends go on meanwhile.  Only this method closes segments, and
        # sync() runs on one thread at a time (the dispatcher's batch loop), so the
        # descriptors stay valid.
        for seg in targets:
            os.fdatasync(seg.fd)
        if dir_too:
            self._sync_directory()
        with self._lock:
            gone = [seg for seg in self._segments.values() if seg.live <= 0 and seg not in self._active]
            for seg in gone:
                del self._segments[seg.seq]
        for seg in gone:
            os.close(seg.fd)
            self._unlink(seg.path)

    def done(self, entry: OutboxEntry) -> None:
        """Mark a webhook delivered or given up (its space goes with its segment)."""
        seg = entry.segment
        # Outside the lock: this write may wait for a flush of its page, and appends must not
        # wait for it.  The segment stays open meanwhile: it is closed only once live is 0.
        try:
            os.pwrite(seg.fd, b"D", entry.record + 4)
        except OSError as exc:
            log.error("webhook outbox: cannot mark the webhook of prediction %s done (%s); it will be "
                      "sent again after a restart", entry.meta.get("prediction_id"), exc)
        with self._lock:
            seg.live -= 1

    def read(self, entry: OutboxEntry) -> Iterator[bytes]:
        """The body of *entry*, in chunks."""
        pos, end = entry.offset, entry.offset + entry.length
        while pos < end:
            chunk = os.pread(entry.segment.fd, min(_READ_CHUNK, end - pos), pos)
            if not chunk:
                raise OSError(f"outbox segment {entry.segment.path} is shorter than recorded")
            pos += len(chunk)
            yield chunk

    # ----------------------------------------------------------------- internals
    def _new_segment(self) -> _Segment:
        # Lock held.  New segments per process start and per segment_bytes of appends.
        seq = self._next_seq
        self._next_seq += 1
        path = os.path.join(self.directory, f"{self.PREFIX}{seq:016x}{self.SUFFIX}")
        # Not O_APPEND: Linux's pwrite() ignores its offset on such files, and done() uses it.
        # Appends are serialised by the lock and go at the file offset, which stays at the end.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        seg = _Segment(seq, path, fd, 0)
        self._segments[seq] = seg
        self._dir_unsynced = True
        return seg

    def _sync_directory(self) -> None:
        # A new segment's directory entry is durable only once the directory is fsynced.
        dfd = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove %s from the webhook outbox: %s", path, exc)

    @classmethod
    def _segment_files(cls, directory: str) -> list[tuple[int, str]]:
        found = []
        for name in os.listdir(directory):
            if name.startswith(cls.PREFIX) and name.endswith(cls.SUFFIX):
                try:
                    found.append((int(name[len(cls.PREFIX):-len(cls.SUFFIX)], 16), os.path.join(directory, name)))
                except ValueError:
                    continue
        return sorted(found)

    @classmethod
    def _read_segment(cls, seg: _Segment) -> tuple[list[OutboxEntry], int]:
        """(pending entries, bytes of an unfinished record at the end)."""
        found: list[OutboxEntry] = []
        pos, size = 0, seg.size
        with open(seg.path, "rb") as f:
            while pos < size:
                f.seek(pos)
                head = f.read(cls._HEAD.size)
                if len(head) < cls._HEAD.size:
                    break
                magic, status, meta_len, body_len = cls._HEAD.unpack(head)
                end = pos + cls._HEAD.size + meta_len + body_len + cls._CRC.size
                if magic != cls.MAGIC or status not in (b"P", b"D") or end > size:
                    break
                meta_bytes = f.read(meta_len)
                crc = zlib.crc32(meta_bytes)
                left = body_len
                while left:
                    chunk = f.read(min(_READ_CHUNK, left))
                    if not chunk:
                        break
                    crc = zlib.crc32(chunk, crc)
                    left -= len(chunk)
                if left or cls._CRC.unpack(f.read(cls._CRC.size))[0] != crc:
                    break
                if status == b"P":
                    try:
                        meta = json.loads(meta_bytes)
                        if not all(isinstance(meta.get(k), str) for k in ("webhook_id", "prediction_id", "url")):
                            raise ValueError("incomplete metadata")
                    except ValueError as exc:
                        log.error("webhook outbox: a record of %s has unreadable metadata (%s); skipped", seg.path, exc)
                    else:
                        found.append(OutboxEntry(meta, seg, pos, pos + cls._HEAD.size + meta_len, body_len))
                pos = end
        return found, size - pos

    @classmethod
    def scan(cls, directory: str) -> list[dict]:
        """The metadata of the pending webhooks in *directory*, oldest first, read-only
        (for operators and tests: it takes no lock and changes nothing)."""
        out = []
        for seq, path in cls._segment_files(directory):
            # A live outbox removes a segment once its last entry is delivered, possibly
            # between the listing and the reads below: a vanished segment holds nothing pending.
            try:
                with open(path, "rb") as f:
                    seg = _Segment(seq, path, -1, os.fstat(f.fileno()).st_size)
                out.extend(e.meta for e in cls._read_segment(seg)[0])
            except FileNotFoundError:
                continue
        return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _EntryBody:
    """The body of an outbox entry, read from its segment on each pass."""

    def __init__(self, outbox: Outbox, entry: OutboxEntry):
        self.outbox, self.entry, self.length = outbox, entry, entry.length

    def chunks(self) -> Iterator[bytes]:
        return self.outbox.read(self.entry)


class _Item:
    """One queued webhook: an event, its payload (or outbox file), its id and retry count."""

    __slots__ = ("terminal", "event", "payload", "webhook_id", "entry", "attempt", "data")

    def __init__(self, terminal: bool, event: str, payload: Any, webhook_id: str):
        self.terminal, self.event, self.payload, self.webhook_id = terminal, event, payload, webhook_id
        self.data: Optional[bytes] = None  # the rendered body, kept when small
        self.entry: Optional[OutboxEntry] = None  # where it is in the outbox, once written
        self.attempt = 0


# ----------------------------------------------------------------------- sender
class WebhookSender:
    """Queues and delivers the webhooks of one prediction (see the module docstring).

    Thousands may wait for a retry at once (a receiver that is down), so a sender is
    kept small: slots, one lock, a :class:`~minicog.engine.run.Latch` rather than an
    Event, shared event filters, and once its terminal body is rendered or in the
    outbox it no longer holds the prediction.
    """

    __slots__ = ("url", "prediction_id", "events", "_dispatcher", "_settings", "_headers", "_on_finished", "_lock",
                 "_queue", "_last_sent", "_scheduled", "_terminal_queued", "webhook_id", "durable",
                 "terminal_delivered", "_finished", "_unstaged", "_stage_lock")

    def __init__(self, dispatcher: "WebhookDispatcher", url: str, prediction_id: str, *,
                 events_filter: Optional[Iterable[str]] = None, headers: Optional[dict[str, str]] = None,
                 on_finished: Optional[Callable[[], None]] = None):
        self.url = url
        self.prediction_id = prediction_id
        self.events = _event_set(EVENTS if events_filter is None else events_filter)
        self._dispatcher = dispatcher
        self._settings = dispatcher.settings
        self._headers = dict(headers) if headers else _NO_HEADERS  # never mutated
        self._on_finished = on_finished
        self._lock = threading.Lock()  # the queue and the flags below
        # A list, not a deque: it holds one or two items nearly always, and an empty deque
        # costs a 500-byte block.
        self._queue: list[_Item] = []
        self._last_sent: Optional[float] = None
        self._scheduled = False  # a delivery step is in the pool's heap or running
        self._terminal_queued = False
        #: The terminal webhook's ``webhook-id`` once it was queued.
        self.webhook_id: Optional[str] = None
        #: True once the terminal webhook is in the outbox (it survives a crash).
        self.durable = False
        self.terminal_delivered: Optional[bool] = None  # None until the terminal send finished
        self._finished = Latch()
        self._unstaged: Optional[_Item] = None  # the terminal item, until written to the outbox
        # Only the outbox stages a terminal item (see wait_durable).
        self._stage_lock = threading.Lock() if dispatcher.settings.webhook_outbox else None

    def send(self, event: str, payload: Any) -> bool:
        """Queue *payload* for *event*; False if filtered or throttled.

        *payload* is the snapshot dict, or a callable returning it, called only when
        the event is really sent (so throttled log events cost no snapshot).  Never
        blocks: with an outbox, the terminal webhook is written by a writer thread or
        by the first caller of :meth:`wait_durable`, whichever comes first.
        """
        terminal = event == "completed"
        if terminal and event not in self.events:
            # Nothing to deliver, but the sender is finished (its reference is released).
            self.close()
            return False
        with self._lock:
            if self._terminal_queued or event not in self.events:
                queued = False
            elif not terminal and event in ("start", "logs") and self._last_sent is not None \
                    and time.monotonic() - self._last_sent < self._settings.throttle_response_interval:
                queued = False
            else:
                queued = True
                item = _Item(terminal, event, payload() if callable(payload) else payload, new_webhook_id())
                if terminal:
                    self._terminal_queued = True
                    self.webhook_id = item.webhook_id
                    # Superseded by the terminal snapshot; "start" is kept, receivers count on it.
                    self._queue[:] = [i for i in self._queue if i.event == "start"]
                else:
                    self._last_sent = time.monotonic()
                    if len(self._queue) >= self._settings.webhook_queue_limit:
                        del self._queue[:len(self._queue) - self._settings.webhook_queue_limit + 1]
                    self._enqueue(item)
        if not queued:
            return False
        if terminal:
            self._dispatcher._pending_add(self)
            if self._dispatcher.outbox is not None:
                self._unstaged = item
                self._dispatcher.writers.call_soon(self.wait_durable)
            else:
                with self._lock:
                    self._enqueue(item)
        return True

    def wait_durable(self) -> None:
        """Return once the terminal webhook is in the outbox (or failed to get there, or
        there is no outbox).  If no writer thread has started on it, the calling thread
        writes it: a sync response then pays no hand-over between threads."""
        if self._unstaged is None:
            return
        with self._stage_lock:
            item = self._unstaged
            if item is None:
                return  # another thread wrote it while we waited for the lock
            outbox = self._dispatcher.outbox
            try:
                body = render_json(item.payload)
                if not body.has_files and body.length <= _INLINE_BODY_BYTES:
                    # Small bodies stay in memory too: retries need not read the file back.
                    item.data = body.materialize()
                    body = Body([item.data])
                item.entry = outbox.append(  # type: ignore[union-attr]
                    item.webhook_id, self.prediction_id, self.url, self._headers, body)
                item.payload = None
                self.durable = True
            except Exception as exc:
                log.error("cannot write the terminal webhook of prediction %s to the outbox %s: %s; "
                          "delivering it without durability", self.prediction_id,
                          outbox.directory if outbox else None, exc)
            self._unstaged = None
        if self.durable:
            self._release_record()  # the body is on disk: the prediction's files are no longer needed
            self._dispatcher._sync_then_send(self, item)
        else:
            with self._lock:
                self._enqueue(item)

    def close(self) -> None:
        """The prediction ended without a terminal send (e.g. filtered): release at once."""
        with self._lock:
            first = not self._terminal_queued
            self._terminal_queued = True
        if first:
            self._finish(None)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the terminal webhook was delivered or given up; True if finished."""
        return self._finished.wait(timeout)

    # ------------------------------------------------------------- internals
    def _enqueue(self, item: _Item) -> None:
        # Lock held.  One step at a time per sender keeps the prediction's events in order.
        self._queue.append(item)
        if not self._scheduled:
            self._scheduled = True
            if not self._dispatcher.pool.call_soon(self._step):
                self._scheduled = False

    def _step(self) -> None:
        with self._lock:
            if not self._queue:
                self._scheduled = False
                return
            item = self._queue.pop(0)
        if item.terminal:
            self._attempt_terminal(item)
            return
        try:
            status = self._post(item)
            self._dispatcher._count(item.event, 200 <= status < 300)
            if not 200 <= status < 300:
                log.warning("webhook %s for prediction %s answered %s", item.event, self.prediction_id, status)
        except Exception as exc:
            self._dispatcher._count(item.event, False)
            log.warning("webhook %s for prediction %s failed: %s", item.event, self.prediction_id,
                        redact_text(exc, self.url))
        with self._lock:
            if not self._queue:
                self._scheduled = False
                return
        if not self._dispatcher.pool.call_soon(self._step):
            with self._lock:
                self._scheduled = False

    def _attempt_terminal(self, item: _Item) -> None:
        s = self._settings
        attempt = item.attempt
        if item.data is None and item.entry is None and item.payload is not None:
            body = render_json(item.payload)
            if not body.has_files and body.length <= _INLINE_BODY_BYTES:
                # Rendered once: retries send these bytes, and the prediction's record (its
                # logs, input, files) is let go now instead of after the retry schedule.
                item.data, item.payload = body.materialize(), None
                self._release_record()
        try:
            status = self._post(item)
        except _NotHTTP as exc:
            log.error("terminal webhook for prediction %s: %s; not retried", self.prediction_id,
                      redact_text(exc, self.url))
            self._dispatcher._count(item.event, False)
            self._done(item, False)
            return
        except Exception as exc:
            self._dispatcher._count(item.event, False)
            log.warning("terminal webhook for prediction %s to %s failed (attempt %d): %s",
                        self.prediction_id, redact_url(self.url), attempt + 1, redact_text(exc, self.url))
        else:
            ok = 200 <= status < 300
            self._dispatcher._count(item.event, ok)
            if ok:
                self._done(item, True)
                return
            if status not in RETRY_STATUSES:
                log.error("terminal webhook for prediction %s to %s answered %s; not retried",
                          self.prediction_id, redact_url(self.url), status)
                self._done(item, False)
                return
            log.warning("terminal webhook for prediction %s answered %s (attempt %d)", self.prediction_id, status, attempt + 1)
        item.attempt = attempt + 1
        if item.attempt > s.webhook_max_retries:
            log.error("terminal webhook for prediction %s to %s not delivered after %d attempts; given up",
                      self.prediction_id, redact_url(self.url), item.attempt)
            self._done(item, False)
            return
        delay = s.webhook_backoff_base * 2 ** min(item.attempt, s.webhook_backoff_max_exponent)
        # A retry waits in the pool's heap, not in a sleeping thread.
        self._dispatcher.pool.call_at(time.monotonic() + delay, functools.partial(self._attempt_terminal, item))

    def _done(self, item: _Item, delivered: bool) -> None:
        if item.entry is not None:
            self._dispatcher.outbox_done(item.entry)
        self._finish(delivered)

    def _release_record(self) -> None:
        callback, self._on_finished = self._on_finished, None
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("webhook release callback failed")

    def _finish(self, delivered: Optional[bool]) -> None:
        if self._finished.is_set():
            return
        self.terminal_delivered = delivered
        self._finished.set()
        self._dispatcher._pending_remove(self)
        self._release_record()

    def _body(self, item: _Item) -> Any:
        if item.data is not None:
            return Body([item.data])
        if item.entry is not None:
            return _EntryBody(self._dispatcher.outbox, item.entry)  # type: ignore[arg-type]
        return render_json(item.payload)

    def _post(self, item: _Item) -> int:
        url, basic = _without_credentials(self.url)
        if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise _NotHTTP(f"webhook URL {redact_url(self.url)!r} is not an http:// or https:// URL")
        body = self._body(item)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "Accept": "*/*",
            "User-Agent": USER_AGENT,
            "Content-Length": str(body.length),
        }
        if basic is not None:
            # Credentials in this prediction's URL are meant for its receiver alone, so
            # they win over the server-wide WEBHOOK_AUTH_TOKEN.
            headers["Authorization"] = basic
        elif self._settings.webhook_auth_token:
            headers["Authorization"] = f"Bearer {self._settings.webhook_auth_token}"
        headers.update(self._headers)
        headers["webhook-id"] = item.webhook_id
        headers["webhook-timestamp"] = str(timestamp)
        data: Any
        if isinstance(body, Body) and not body.has_files:
            data = body.materialize()
            pieces: Iterable[bytes] = (data,)
        else:
            data = body.chunks()
            pieces = body.chunks()  # a second pass: the signature goes out before the body
        signer = self._dispatcher.signer
        if signer is not None:
            headers["webhook-signature"] = signer.sign(item.webhook_id, timestamp, pieces)
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        limit = self._settings.webhook_max_response_bytes
        try:
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


def _without_credentials(url: str) -> tuple[str, Optional[str]]:
    """(*url* without ``user:password@``, the matching Basic ``Authorization`` value or None).

    urllib would take the credentials for part of the host name and never connect;
    HTTP clients (curl, requests, coglet's reqwest) send them as Basic auth instead."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode("utf-8")
    bare = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, "Basic " + base64.b64encode(pair).decode("ascii")


def _call(callback: Optional[Callable[[], None]]) -> None:
    if callback is not None:
        try:
            callback()
        except Exception:
            log.exception("webhook callback failed")


# ------------------------------------------------------------------- dispatcher
class WebhookDispatcher:
    """Makes senders, owns the delivery pool, the signer and the outbox, and tracks
    terminal webhooks still pending (for shutdown)."""

    def __init__(self, settings: Optional[Settings] = None, *, on_attempt: Optional[Callable[[str, bool], None]] = None):
        self.settings = s = settings or Settings()
        self.pool = TimerPool("minicog-webhook", s.webhook_workers, s.webhook_pool_idle_timeout)
        self.writers = TimerPool("minicog-outbox", s.webhook_outbox_writers, s.webhook_pool_idle_timeout)
        #: ``on_attempt(event, ok)`` after each delivery attempt (the metrics hook).
        self.on_attempt = on_attempt
        self.signer: Optional[Signer] = None
        if s.webhook_secret:
            try:
                self.signer = Signer(s.webhook_secret)
            except ValueError as exc:
                # Settings.from_env already refused such a value; this is a Settings built in code.
                raise ValueError(f"webhook_secret: {exc}") from None
        self.outbox: Optional[Outbox] = None
        self._to_sync: list[tuple[WebhookSender, _Item]] = []
        self._syncing = False
        self._sync_wanted = False
        self._lock = threading.Lock()
        self._pending: set[WebhookSender] = set()
        self._started = False

    def start(self) -> int:
        """Open the outbox (if configured) and redeliver what it holds; returns how many."""
        if self._started or not self.settings.webhook_outbox:
            self._started = True
            return 0
        self._started = True
        outbox = Outbox(self.settings.webhook_outbox, self.settings.webhook_outbox_segment_bytes)
        try:
            entries = outbox.open()
        except OSError as exc:
            log.error("webhook outbox %s is unusable (%s): terminal webhooks will NOT survive a restart",
                      self.settings.webhook_outbox, exc.strerror or exc)
            outbox.close()
            return 0
        self.outbox = outbox
        for entry in entries:
            meta = entry.meta
            headers = meta.get("headers") if isinstance(meta.get("headers"), dict) else {}
            sender = WebhookSender(self, meta["url"], meta["prediction_id"], headers=headers)
            item = _Item(True, "completed", None, meta["webhook_id"])
            item.entry = entry
            sender._terminal_queued = True
            sender.webhook_id = item.webhook_id
            sender.durable = True
            self._pending_add(sender)
            with sender._lock:
                sender._enqueue(item)
        if entries:
            log.info("webhook outbox %s: redelivering %d terminal webhook(s) left by a previous run",
                     outbox.directory, len(entries))
        return len(entries)

    def sender(self, url: str, prediction_id: str, *, events_filter: Optional[Iterable[str]] = None,
               headers: Optional[dict[str, str]] = None, on_finished: Optional[Callable[[], None]] = None) -> WebhookSender:
        return WebhookSender(self, url, prediction_id, events_filter=events_filter, headers=headers, on_finished=on_finished)

    def _sync_then_send(self, sender: Optional[WebhookSender], item: Optional[_Item]) -> None:
        """Queue an appended entry for the next fsync batch (its first attempt follows the
        batch), or with (None, None) just ask for a pass that deletes finished segments."""
        with self._lock:
            if sender is not None:
                self._to_sync.append((sender, item))
            self._sync_wanted = True
            if self._syncing:
                return
            self._syncing = True
        if not self.writers.call_soon(self._sync_batches):
            with self._lock:
                self._syncing = False

    def _sync_batches(self) -> None:
        # One pass at a time (the _syncing flag): whatever was appended meanwhile shares
        # the next fdatasync - group commit.
        while True:
            with self._lock:
                batch, self._to_sync = self._to_sync, []
                if not self._sync_wanted:
                    self._syncing = False
                    return
                self._sync_wanted = False
            try:
                self.outbox.sync()  # type: ignore[union-attr]
            except OSError as exc:
                log.error("webhook outbox %s: fsync failed (%s); %d webhook(s) may not survive a power loss",
                          self.settings.webhook_outbox, exc, len(batch))
            for sender, item in batch:
                with sender._lock:
                    sender._enqueue(item)

    def outbox_done(self, entry: OutboxEntry) -> None:
        if self.outbox is not None:
            self.outbox.done(entry)
            if entry.segment.live <= 0:
                self._sync_then_send(None, None)  # the segment may be deletable now

    def _count(self, event: str, ok: bool) -> None:
        if self.on_attempt is not None:
            try:
                self.on_attempt(event, ok)
            except Exception:
                log.exception("webhook metrics hook failed")

    def _pending_add(self, sender: WebhookSender) -> None:
        with self._lock:
            self._pending.add(sender)

    def _pending_remove(self, sender: WebhookSender) -> None:
        with self._lock:
            self._pending.discard(sender)

    def pending(self) -> list[WebhookSender]:
        """Senders whose terminal webhook is queued, being written or being retried.

        Each has ``prediction_id``, ``url``, ``webhook_id`` and ``durable`` (True when
        the webhook is in the outbox and will be delivered by the next start).
        """
        with self._lock:
            return list(self._pending)

    def flush(self, timeout: float) -> list[WebhookSender]:
        """Wait up to *timeout* seconds for pending terminal webhooks; log and return the rest."""
        deadline = time.monotonic() + timeout
        for sender in self.pending():
            sender.wait(max(0.0, deadline - time.monotonic()))
        left = self.pending()
        for sender in left:
            if sender.durable and self.outbox is not None:
                log.warning("shutdown: terminal webhook for prediction %s to %s not delivered yet; kept in the outbox %s "
                            "for the next start", sender.prediction_id, redact_url(sender.url), self.outbox.directory)
            else:
                log.error("shutdown: terminal webhook for prediction %s to %s was not delivered within the grace period",
                          sender.prediction_id, redact_url(sender.url))
        return left

    def close(self) -> None:
        """Stop delivering (what is pending stays in the outbox, if any); idempotent."""
        self.pool.close()
        self.writers.close()
        if self.outbox is not None:
            self.outbox.close()
