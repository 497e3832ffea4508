"""A small load generator for Cog-compatible HTTP servers, standard library only.

The benchmark (``bench.py``) drives minicog and coglet with the same client
code, so any cost of the client falls on both servers equally.  This module
holds that client code and the measurement helpers:

* pure statistics (:func:`percentile`, :func:`summarize_latencies`);
* process-tree memory readers built on ``/proc`` (:func:`process_tree`,
  :func:`tree_memory`, :class:`TreeMemorySampler`): a server is a parent plus
  a worker subprocess, so every figure sums the whole tree;
* HTTP clients: a closed-loop request generator with N threads and one
  keep-alive connection per thread (:func:`run_load`, on raw sockets: see
  :class:`RawConnection`), an SSE reader on the same raw sockets
  (:func:`stream_sse`), and, built on ``http.client``, a large-response reader that never keeps the body
  (:func:`fetch_large`) and a readiness poller (:func:`wait_ready`).

Design choices and their trade-offs:

* Closed loop (each thread sends its next request when the previous answer
  arrived), as real synchronous clients do.  It measures latency under the
  given concurrency rather than the server's behaviour under overload.
* Every loop is bounded twice, by a request count and by a deadline, and every
  socket has a timeout, so a hung server can never hang the benchmark.
* Threads, not processes: on a small machine the client's GIL can become the
  bottleneck at concurrency 8; that cost is the same for both servers.
* Loopback only: :func:`_connection` and :class:`RawConnection` refuse any host
  but 127.0.0.1/::1/localhost.
* The request generator does not use ``http.client``: on these 2-core machines its
  request building and header parsing (``email.parser``) cost the client about
  100 us of CPU per request, on the cores the servers use, and inside the timed
  interval.  :class:`RawConnection` sends request bytes built once and reads each
  answer by its ``Content-Length`` (about 25 us per request).  Every answer is
  still checked as before: its status code, and for a 200 the JSON body's
  ``status``.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import threading
import time
from typing import Any, Callable, Iterable, Optional, Sequence

__all__ = [
    "percentile",
    "summarize_latencies",
    "process_tree",
    "read_status_kb",
    "read_pss_kb",
    "tree_memory",
    "TreeMemorySampler",
    "run_load",
    "RawConnection",
    "ResponseError",
    "build_request",
    "stream_sse",
    "fetch_large",
    "wait_ready",
    "ServerNotReady",
]

LOOPBACK = ("127.0.0.1", "::1", "localhost")


# --------------------------------------------------------------------------------------
# Statistics


def percentile(values: Sequence[float], p: float) -> Optional[float]:
    """The *p*-th percentile (0..100) of *values* by linear interpolation between
    closest ranks (numpy's default method); ``None`` for an empty sequence."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * p / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(data[low])
    return data[low] + (data[high] - data[low]) * (rank - low)


def summarize_latencies(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p90, p99, mean and max of latencies given in seconds, in milliseconds."""
    if not seconds:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    ms = [s * 1000.0 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
        "max_ms": round(max(ms), 3),
    }


# --------------------------------------------------------------------------------------
# Process-tree memory (Linux /proc)


def _parent_map(proc: str = "/proc") -> dict[int, int]:
    """pid -> ppid for every process visible in *proc*."""
    parents: dict[int, int] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "stat"), "rb") as fh:
                stat = fh.read().decode("ascii", "replace")
        except OSError:  # the process exited while we looked
            continue
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        rest = stat[stat.rfind(")") + 2:].split()
        if len(rest) >= 2:
            parents[int(entry)] = int(rest[1])
    return parents


def process_tree(pid: int, proc: str = "/proc") -> list[int]:
    """*pid* followed by all its live descendants (breadth first); [] if *pid* is gone."""
    if not os.path.exists(os.path.join(proc, str(pid))):
        return []
    children: dict[int, list[int]] = {}
    for child, parent in _parent_map(proc).items():
        children.setdefault(parent, []).append(child)
    tree, queue = [], [pid]
    while queue and len(tree) < 10000:  # bounded even if /proc were inconsistent
        current = queue.pop(0)
        if current in tree:
            continue
        tree.append(current)
        queue.extend(sorted(children.get(current, ())))
    return tree


def read_status_kb(pid: int, field: str, proc: str = "/proc") -> Optional[int]:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM, ...); None if unavailable."""
    try:
        with open(os.path.join(proc, str(pid), "status"), encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_pss_kb(pid: int, proc: str = "/proc") -> Optional[int]:
    """Proportional set size from /proc/<pid>/smaps_rollup (shared pages split between
    the processes sharing them), or None where the kernel or permissions do not allow it."""
    try:
        with open(os.path.join(proc, str(pid), "smaps_rollup"), encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def tree_memory(pid: int, proc: str = "/proc") -> dict[str, Any]:
    """Memory of *pid* and its descendants, summed: VmRSS (now), VmHWM (each process's
    high-water mark since it started) and PSS, all in kB, plus the pids counted."""
    pids = process_tree(pid, proc)
    rss = hwm = pss = 0
    pss_ok = bool(pids)
    for p in pids:
        rss += read_status_kb(p, "VmRSS", proc) or 0
        hwm += read_status_kb(p, "VmHWM", proc) or 0
        value = read_pss_kb(p, proc)
        if value is None:
            pss_ok = False
        else:
            pss += value
    return {"pids": pids, "rss_kb": rss, "hwm_kb": hwm, "pss_kb": pss if pss_ok else None}


class TreeMemorySampler:
    """Samples the summed VmRSS of a process tree in a background thread.

    Use as a context manager around the work to observe; ``peak_rss_kb`` is the
    largest sum seen.  Sampling catches simultaneous peaks that a sum of per-process
    high-water marks would overstate, but can miss spikes shorter than *interval*;
    the benchmark reports both.  The thread stops at ``__exit__`` or after
    *max_seconds*, whichever comes first.
    """

    def __init__(self, pid: int, interval: float = 0.01, max_seconds: float = 300.0):
        self.pid = pid
        self.interval = interval
        self.max_seconds = max_seconds
        self.peak_rss_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory-sampler", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            total = sum(read_status_kb(p, "VmRSS") or 0 for p in process_tree(self.pid))
            self.peak_rss_kb = max(self.peak_rss_kb, total)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "TreeMemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


# --------------------------------------------------------------------------------------
# HTTP clients


def _connection(host: str, port: int, timeout: float) -> http.client.HTTPConnection:
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only talks to loopback addresses, not {host!r}")
    return http.client.HTTPConnection(host, port, timeout=timeout)


class ResponseError(ValueError):
    """An answer :class:`RawConnection` cannot read (no ``Content-Length``, a bad head)."""


# The longest response head RawConnection accepts, in bytes.
_MAX_HEAD = 64 * 1024


def build_request(host: str, port: int, method: str, path: str, body: bytes,
                  headers: Optional[dict[str, str]] = None) -> bytes:
    """One HTTP/1.1 request with a ``Content-Length`` body, as bytes to send as is."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class RawConnection:
    """One keep-alive HTTP/1.1 client connection on a plain socket (loopback only).

    :meth:`exchange` sends request bytes (see :func:`build_request`) and reads one
    answer: the status line, the headers up to the blank line (at most 64 KiB), then
    exactly ``Content-Length`` bytes of body.  Both servers frame their JSON answers
    that way; an answer without it (chunked, or to be read until close) raises
    :class:`ResponseError`.  Bytes after the body stay buffered for the next answer.
    """

    def __init__(self, host: str, port: int, timeout: float):
        if host not in LOOPBACK:
            raise ValueError(f"the load generator only talks to loopback addresses, not {host!r}")
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionResetError("the server closed the connection")
        self._buf += data

    def read_head(self) -> tuple[int, bool, dict[str, str]]:
        """Read one answer's head: (status code, whether the server closes, headers by lower-case name)."""
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self._buf) > _MAX_HEAD:
                raise ResponseError("response head too long")
            self._fill()
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[:end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ResponseError(f"bad status line {head[0][:100]!r}")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        close = headers.get("connection", "").lower() == "close" if "connection" in headers else parts[0] == "HTTP/1.0"
        return int(parts[1]), close, headers

    def exchange(self, request: bytes) -> tuple[int, bool, bytes]:
        """Send *request*; return (status code, whether the server closes, body)."""
        self.sock.sendall(request)
        status, close, headers = self.read_head()
        if "content-length" not in headers:
            raise ResponseError("response without Content-Length")
        length = int(headers["content-length"])
        while len(self._buf) < length:
            self._fill()
        body = bytes(self._buf[:length])
        del self._buf[:length]
        return status, close, body

    def body_pieces(self, headers: dict[str, str]) -> Iterable[bytes]:
        """The body of an answer whose head was read, as it arrives: by its
        ``Content-Length``, chunked, or up to the close."""
        if "content-length" in headers:
            length = int(headers["content-length"])
            while len(self._buf) < length:
                self._fill()
            yield bytes(self._buf[:length])
            del self._buf[:length]
            return
        if headers.get("transfer-encoding", "").lower() != "chunked":
            if self._buf:
                yield bytes(self._buf)
                self._buf.clear()
            while True:
                data = self.sock.recv(1 << 18)
                if not data:
                    return
                yield data
        while True:
            end = self._buf.find(b"\r\n")
            while end < 0:
                self._fill()
                end = self._buf.find(b"\r\n")
            size = int(bytes(self._buf[:end]).split(b";")[0], 16)
            del self._buf[:end + 2]
            if size == 0:
                return
            while len(self._buf) < size + 2:
                if len(self._buf) > 2:  # hand over what is there: a chunk may be large
                    piece = bytes(self._buf[:min(size, len(self._buf))])
                    del self._buf[:len(piece)]
                    size -= len(piece)
                    yield piece
                self._fill()
            piece = bytes(self._buf[:size])
            del self._buf[:size + 2]  # the data and its CRLF
            yield piece

    def close(self) -> None:
        self.sock.close()


class ServerNotReady(RuntimeError):
    """The server did not report READY in time, or its process exited."""


def wait_ready(
    host: str,
    port: int,
    timeout: float = 60.0,
    interval: float = 0.01,
    alive: Optional[Callable[[], bool]] = None,
) -> dict[str, Any]:
    """Poll GET /health-check until ``status`` is READY; return that health document.

    *alive* (e.g. ``lambda: popen.poll() is None``) lets the poll fail fast when the
    server process died.  Raises :class:`ServerNotReady` after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise ServerNotReady(f"server process exited before READY (last health: {last!r})")
        conn = _connection(host, port, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
        try:
            conn.request("GET", "/health-check")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status == 200:
                doc = json.loads(body)
                last = doc.get("status")
                if last == "READY":
                    return doc
                if last in ("SETUP_FAILED", "DEFUNCT"):
                    raise ServerNotReady(f"server reported {last}: {json.dumps(doc.get('setup'))[:500]}")
        except (OSError, http.client.HTTPException, ValueError):
            pass  # not listening yet, or mid-start
        finally:
            conn.close()
        time.sleep(interval)
    raise ServerNotReady(f"no READY within {timeout}s (last health status: {last!r})")


def run_load(
    host: str,
    port: int,
    *,
    path: str = "/predictions",
    body: Any = None,
    concurrency: int = 1,
    requests: int = 100,
    duration: float = 30.0,
    timeout: float = 30.0,
    headers: Optional[dict[str, str]] = None,
) -> dict[str, Any]:
    """Send up to *requests* POSTs of JSON *body* with *concurrency* threads, for at most
    *duration* seconds, and report throughput, latency and the status codes seen.

    A request counts as a success when the answer is 200 with ``"status": "succeeded"``
    (the JSON body of every 200 is parsed); 409s (all slots busy) are counted separately;
    any other answer or a transport error is an error (the thread reconnects and
    carries on).  Requests go through :class:`RawConnection`."""
    payload = json.dumps({"input": {}} if body is None else body).encode()
    send_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    send_headers.update(headers or {})
    request = build_request(host, port, "POST", path, payload, send_headers)
    lock = threading.Lock()
    state = {"issued": 0}
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    ok = [0]
    start = time.monotonic()
    deadline = start + duration

    def take_ticket() -> bool:
        with lock:
            if state["issued"] >= requests or time.monotonic() >= deadline:
                return False
            state["issued"] += 1
            return True

    def worker() -> None:
        conn = RawConnection(host, port, timeout)
        try:
            while take_ticket():
                t0 = time.perf_counter()
                try:
                    status, will_close, data = conn.exchange(request)
                except (OSError, ValueError) as exc:  # ResponseError is a ValueError
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        statuses["transport-error"] = statuses.get("transport-error", 0) + 1
                    conn.close()
                    conn = RawConnection(host, port, timeout)
                    continue
                elapsed = time.perf_counter() - t0
                succeeded = False
                if status == 200:
                    try:
                        doc = json.loads(data)
                        succeeded = isinstance(doc, dict) and doc.get("status") == "succeeded"
                    except ValueError:
                        succeeded = False
                with lock:
                    key = str(status) if status != 200 or succeeded else "200-not-succeeded"
                    statuses[key] = statuses.get(key, 0) + 1
                    if succeeded:
                        ok[0] += 1
                        latencies.append(elapsed)
                    elif len(errors) < 20 and status != 409:
                        errors.append(f"HTTP {status}: {data[:200]!r}")
                if will_close:
                    conn.close()
                    conn = RawConnection(host, port, timeout)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        # Each thread stops taking tickets at the deadline; one request may still be in
        # flight, bounded by the socket timeout.
        t.join(timeout=max(0.0, deadline - time.monotonic()) + timeout + 5.0)
    wall = time.monotonic() - start
    result = {
        "concurrency": concurrency,
        "requests": state["issued"],
        "succeeded": ok[0],
        "wall_s": round(wall, 3),
        "throughput_rps": round(ok[0] / wall, 2) if wall > 0 else None,
        "statuses": dict(sorted(statuses.items())),
        "count_409": statuses.get("409", 0),
        "errors": errors[:5],
        "timed_out": any(t.is_alive() for t in threads),
    }
    result.update(summarize_latencies(latencies))
    return result


def _sse_events(pieces: Iterable[bytes], deadline: float) -> Iterable[tuple[str, str]]:
    """(event, data) pairs from an event stream's body pieces; comments and ids are skipped.

    Events are split on blank lines in bulk (one ``bytes.split`` per piece received),
    not read line by line: the reader must stay much faster than either server.
    """
    pending = b""
    for piece in pieces:
        if time.monotonic() >= deadline:
            break
        blocks = (pending + piece).replace(b"\r\n", b"\n").split(b"\n\n")
        pending = blocks.pop()
        for block in blocks:
            event, data = "message", []
            for line in block.decode("utf-8", "replace").split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    event = value
                elif name == "data":
                    data.append(value)
            if data:
                yield event, "\n".join(data)
    else:
        return
    raise TimeoutError("SSE stream did not finish before the deadline")


def stream_sse(
    host: str,
    port: int,
    *,
    body: Any,
    path: str = "/predictions",
    timeout: float = 60.0,
    expect: Optional[list[str]] = None,
) -> dict[str, Any]:
    """POST *body* with ``Accept: text/event-stream`` and read the stream to its end.

    Reports time to first ``output`` event, total time, the token rate (output events
    per second of the whole request) and whether the chunks, put in index order,
    equal *expect*."""
    request = build_request(host, port, "POST", path, json.dumps(body).encode(),
                            {"Content-Type": "application/json", "Accept": "text/event-stream"})
    deadline = time.monotonic() + timeout
    first = None
    chunks: dict[int, Any] = {}
    counts: dict[str, int] = {}
    completed: Optional[dict[str, Any]] = None
    error_event = None
    t0 = time.perf_counter()
    conn = RawConnection(host, port, timeout)
    try:
        conn.sock.sendall(request)
        status, _, headers = conn.read_head()
        if status != 200:
            return {"ok": False, "http_status": status,
                    "error": b"".join(conn.body_pieces(headers))[:500].decode("utf-8", "replace")}
        for event, data in _sse_events(conn.body_pieces(headers), deadline):
            counts[event] = counts.get(event, 0) + 1
            if event == "output":
                if first is None:
                    first = time.perf_counter() - t0
                item = json.loads(data)
                chunks[item["index"]] = item["chunk"]
            elif event == "completed":
                completed = json.loads(data)
                break
            elif event == "error":
                error_event = data
                break
        total = time.perf_counter() - t0
    finally:
        conn.close()
    ordered = [chunks[i] for i in sorted(chunks)]
    correct = expect is None or ordered == expect
    status = completed.get("status") if completed else None
    return {
        "ok": status == "succeeded" and correct,
        "status": status,
        "tokens": len(ordered),
        "correct": correct,
        "events": counts,
        "error_event": error_event,
        "ttft_ms": round(first * 1000.0, 3) if first is not None else None,
        "total_s": round(total, 4),
        "tokens_per_s": round(len(ordered) / total, 1) if total > 0 else None,
    }


def post_json_bytes(host: str, port: int, body: bytes, *, path: str = "/predictions", timeout: float = 120.0) -> dict[str, Any]:
    """POST a ready-encoded JSON *body* (which may be large) and read the whole answer.

    Returns ``ok`` (200 and ``succeeded``), ``time_s`` (request sent → answer read),
    ``output`` (the prediction's output) and ``response_bytes``."""
    conn = _connection(host, port, timeout)
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    try:
        doc = json.loads(data)
    except ValueError:
        doc = {}
    ok = resp.status == 200 and isinstance(doc, dict) and doc.get("status") == "succeeded"
    out: dict[str, Any] = {"ok": ok, "status": resp.status, "time_s": round(elapsed, 3),
                           "output": doc.get("output") if isinstance(doc, dict) else None, "response_bytes": len(data)}
    if not ok:
        out["error"] = (doc.get("error") if isinstance(doc, dict) and doc.get("error") else data[:300].decode("utf-8", "replace"))
    return out


def fetch_large(
    host: str,
    port: int,
    *,
    body: Any,
    path: str = "/predictions",
    timeout: float = 120.0,
    chunk: int = 1 << 20,
    min_bytes: int = 0,
) -> dict[str, Any]:
    """POST *body* and read a (very) large JSON answer in chunks without keeping it.

    Only the first and last 256 bytes are kept, enough to check the status; the body
    must be at least *min_bytes* long (a 100 MB file is ~140 MB of base64).  The
    client's own memory therefore stays small."""
    conn = _connection(host, port, timeout)
    deadline = time.monotonic() + timeout
    t0 = time.perf_counter()
    head = b""
    tail = b""
    size = 0
    try:
        conn.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        while time.monotonic() < deadline:
            data = resp.read(chunk)
            if not data:
                break
            if len(head) < 256:
                head += data[: 256 - len(head)]
            tail = (tail + data)[-256:]
            size += len(data)
        else:
            raise TimeoutError(f"response not read within {timeout}s")
        elapsed = time.perf_counter() - t0
    finally:
        conn.close()
    ends = head + b" ... " + tail
    succeeded = b'"status":"succeeded"' in ends.replace(b" ", b"")
    return {
        "ok": resp.status == 200 and succeeded and size >= min_bytes,
        "http_status": resp.status,
        "bytes": size,
        "time_s": round(elapsed, 3),
        "head": head[:120].decode("utf-8", "replace"),
    }
