"""A seeded corpus of malformed requests against a real ``minicog serve`` process.

Every request must get a well-formed answer that is not a 5xx (505 for HTTP
versions is the only one allowed) or a clean close, within a deadline; the
server's output must hold no traceback; and a normal prediction must work
afterwards.  The corpus is generated from a fixed seed, so a failure names the
case that caused it and reproduces.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import pytest

from support import predictor, wait_until

SEED = 20261202
CASES = 2400
CLIENTS = 16
# Seconds one exchange may take: the server's read and header timeouts (1 s) plus slack
# for a loaded machine.  Longer counts as a hang.
EXCHANGE_DEADLINE = 20.0

STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")

METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW", "get", "P\x00ST", "", "GET GET",
           "\u00e9T", "X" * 300]
PATHS = ["/", "/predictions", "/trainings", "/health-check", "/openapi.json", "/predictions/abc",
         "/predictions/abc/cancel", "/predictions/%ff%fe", "/predictions/%00", "/predictions/a%2Fb", "//evil/x",
         "/predictions/" + "x" * 400, "/pr\u00e9dictions", "*", "http://127.0.0.1/predictions", "/?q=\u2603",
         "/predictions/\u2603", "/predictions/ /cancel", "/predictions//cancel", "", "/%", "/docs",
         "/shutdownx", "/predictions/\ud800".encode("utf-8", "surrogatepass").decode("latin-1")]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/3", "HTTP/1.x", "HTTX/1.1", "http/1.1", "",
            "HTTP/1.1 extra", "HTTP/01.01", "HTTP/1.1\x00", "HTTP/9999999999999.1", "HTTP/1.-1"]
STRINGS = ["", "a", "hi", "x" * 60, "\u2603", "\U0001F600", "\u0000", "\u200b", "\ufeff", "e\u0301",
           "\\ud800", "\\udfff", "\\ud83d\\ude00", "<script>", "'; DROP TABLE", "%s%n", "../../etc/passwd",
           "\r\nX-Injected: 1", "\u202e", "\ud7ff"]
NUMBERS = ["0", "-1", "1", "10", "11", "1e400", "-1e400", "NaN", "Infinity", "1.5", "9" * 400, "-0", "1e-400",
           "0x10", "01", "1.", ".5", "true", "null"]
WEBHOOKS = ['"not a url"', '"ftp://127.0.0.1/x"', "12", "null", '"http://127.0.0.1:9/hook"', '"\\ud800"', "[]",
            '"http://[::1"']


def _json_string(rng: random.Random) -> str:
    s = rng.choice(STRINGS)
    if s.startswith("\\u"):
        return '"' + s + '"'  # an escape kept as written: lone or paired surrogates
    return json.dumps(s, ensure_ascii=rng.random() < 0.5)


def _json_value(rng: random.Random, depth: int = 0) -> str:
    kind = rng.randrange(8 if depth < 3 else 4)
    if kind == 0:
        return _json_string(rng)
    if kind == 1:
        return rng.choice(NUMBERS)
    if kind == 2:
        return rng.choice(["true", "false", "null"])
    if kind == 3:
        return "[" * 30 + "]" * 30 if rng.random() < 0.1 else "[]"
    if kind == 4:
        return "[" + ", ".join(_json_value(rng, depth + 1) for _ in range(rng.randrange(4))) + "]"
    return "{" + ", ".join(f"{_json_string(rng)}: {_json_value(rng, depth + 1)}" for _ in range(rng.randrange(4))) + "}"


def _input(rng: random.Random) -> str:
    """An input object for the echo model: its fields with good or bad values, or junk.

    Never a large ``sleep`` (a legitimately slow prediction would hold the single slot)."""
    fields = []
    for name in rng.sample(["text", "n", "fail", "metric", "sleep", "unknown", "\u2603", "\\ud800"], rng.randrange(5)):
        if name == "sleep":
            value = rng.choice(['"x"', "[]", "0", "0.001", "-1", "null"])
        elif name == "\\ud800":
            fields.append('"\\ud800": 1')
            continue
        else:
            value = _json_value(rng)
        fields.append(f"{json.dumps(name)}: {value}")
    if rng.random() < 0.1:
        return _json_value(rng)
    return "{" + ", ".join(fields) + "}"


def _body(rng: random.Random) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if kind == 1:
        return b'{"input": {"text": "tru'  # truncated
    if kind == 2:
        return _json_value(rng).encode()
    if kind == 3:
        return b"\xff\xfe{}" if rng.random() < 0.5 else b'{"input": {"text": "\xc3\x28"}}'
    parts = []
    if rng.random() < 0.8:
        parts.append(f'"input": {_input(rng)}')
    if rng.random() < 0.3:
        parts.append(f'"id": {rng.choice([_json_string(rng), "12", "null", "[]", json.dumps("a/b"), json.dumps("x" * 300)])}')
    if rng.random() < 0.2:
        parts.append(f'"context": {rng.choice([_json_value(rng), "{" + _json_string(rng) + ": " + _json_value(rng) + "}"])}')
    if rng.random() < 0.15:
        parts.append(f'"webhook": {rng.choice(WEBHOOKS)}')
    if rng.random() < 0.15:
        parts.append('"webhook_events_filter": ' + rng.choice(['[]', '[1]', '["start"]', '["bogus"]', '{}']))
    rng.shuffle(parts)
    text = "{" + ", ".join(parts) + "}"
    if rng.random() < 0.05:
        text = text.replace(",", ",,", 1)
    return text.encode("utf-8", "surrogatepass")


def _headers(rng: random.Random, body: bytes) -> tuple[list[bytes], bytes]:
    """Header lines and the body as framed (or misframed) on the wire."""
    lines = [b"Host: 127.0.0.1"]
    framing = rng.randrange(12)
    if framing == 10 and rng.random() < 0.75:
        framing = 0  # a stalled body costs the server's read timeout: keep those few
    wire = body
    if framing < 6:
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == 6:
        lines.append(rng.choice([b"Content-Length: -1", b"Content-Length: abc", b"Content-Length: 1e3",
                                 b"Content-Length: +5", b"Content-Length: 99999999999999999999",
                                 b"Content-Length: 10\r\nContent-Length: 11", b"Content-Length:"]))
    elif framing == 7:
        lines.append(b"Transfer-Encoding: chunked")
        wire = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    elif framing == 8:
        lines.append(b"Transfer-Encoding: " + rng.choice([b"gzip", b"chunked, gzip", b"identity", b"\xff"]))
        lines.append(b"Content-Length: %d" % len(body))
    elif framing == 9:
        lines.append(b"Transfer-Encoding: chunked")
        wire = rng.choice([b"zz\r\n", b"-1\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n", b"5;ext=1\r\nhello\r\n0\r\n\r\n",
                           b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", b"ffffffffffffffffffff\r\n"])
    elif framing == 10:
        lines.append(b"Content-Length: %d" % (len(body) + rng.randrange(1, 5)))  # more than sent: a stall
    # else: no framing at all (body bytes then look like the next request)
    if rng.random() < 0.7:
        lines.append(rng.choice([b"Content-Type: application/json", b"Content-Type: application/json; charset=utf-8",
                                 b"Content-Type: text/plain", b"Content-Type: application/vnd+json",
                                 b"Content-Type: \xff\xfe", b"Content-Type:", b"content-type: APPLICATION/JSON"]))
    extra = [b"Accept: text/event-stream", b"Accept: */*", b"Prefer: respond-async", b"Prefer: respond-async, wait=5",
             b'Prefer: "unterminated', b"Prefer: wait=abc", b"Last-Event-ID: -1", b"Last-Event-ID: 99999999999999999999",
             b"Connection: close", b"Connection: keep-alive", b"Connection: \xff", b"Expect: 100-continue",
             b"Expect: nonsense", b"X-\xc3\xa9: \xe2\x98\x83", b"no colon here", b" folded continuation",
             b"Bad Name: x", b": empty name", b"X-Long: " + b"a" * 3000, b"traceparent: 00-zz-\xff-01",
             b"Host: a\r\nHost: b", b"X-Null: a\x00b", b"Content-Length : 3"]
    for _ in range(rng.randrange(4)):
        lines.append(rng.choice(extra))
    if rng.random() < 0.02:
        lines.extend(b"X-%d: y" % i for i in range(120))
    return lines, wire


def make_case(rng: random.Random, index: int) -> bytes:
    """One request as raw bytes; which part is malformed varies with the draw."""
    method = rng.choice(METHODS) if rng.random() < 0.3 else rng.choice(["POST", "PUT", "GET"])
    path = rng.choice(PATHS)
    if method == "PUT" and rng.random() < 0.7:
        path = f"/predictions/fuzz-{index}"
    elif method == "POST" and rng.random() < 0.7:
        path = "/predictions"
    version = rng.choice(VERSIONS) if rng.random() < 0.25 else "HTTP/1.1"
    line = " ".join(p for p in (method, path, version) if p or rng.random() < 0.5)
    if rng.random() < 0.05:
        line = line.replace(" ", rng.choice(["  ", "\t", " \x00 "]))
    if rng.random() < 0.03:
        line = "\r\n" + line  # a blank line before the request line
    head_lines, wire = _headers(rng, _body(rng))
    eol = b"\n" if rng.random() < 0.05 else b"\r\n"
    head = line.encode("utf-8", "surrogatepass") + eol + eol.join(head_lines) + eol + eol
    data = head + wire
    if rng.random() < 0.03:
        data += b"GET /health-check HTTP/1.1\r\nHost: x\r\n\r\n"  # pipelined
    if rng.random() < 0.02:
        data = data[:rng.randrange(1, len(data))]  # cut short, then silence
    return data


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("Threads:")).split()[1])


def exchange(port: int, data: bytes) -> tuple[Optional[int], bytes]:
    """Send *data*, read one response (or until close); (status or None if closed without answer, head)."""
    deadline = time.monotonic() + EXCHANGE_DEADLINE
    with socket.create_connection(("127.0.0.1", port), timeout=EXCHANGE_DEADLINE) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading everything (413, 431)
        buf = b""
        while True:
            interim = re.match(rb"HTTP/1\.1 100 [^\r\n]*\r\n\r\n", buf)
            if interim:
                buf = buf[interim.end():]
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = buf[:head_end]
                m = STATUS_LINE.match(head)
                assert m, f"malformed status line: {head[:200]!r}"
                status = int(m.group(1))
                lower = head.lower()
                length = re.search(rb"\r\ncontent-length: (\d+)", lower)
                body = buf[head_end + 4:]
                if length is not None:
                    need = int(length.group(1))
                    if b"HEAD " not in data[:8] and len(body) < need:
                        pass  # read on
                    else:
                        return status, head + b"\r\n\r\n" + body[:need]
                elif b"transfer-encoding: chunked" in lower:
                    if body.endswith(b"0\r\n\r\n"):
                        return status, head
                else:
                    return status, head
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer within {EXCHANGE_DEADLINE}s (hang) to {data[:300]!r}")
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except socket.timeout:
                raise AssertionError(f"no answer within {EXCHANGE_DEADLINE}s (hang) to {data[:300]!r}")
            if not chunk:
                if buf:
                    assert STATUS_LINE.match(buf), f"cut answer {buf[:200]!r} to {data[:300]!r}"
                    return int(STATUS_LINE.match(buf).group(1)), buf
                return None, b""
            buf += chunk


@pytest.mark.slow
def test_fuzzed_requests_get_clean_answers_and_the_server_keeps_working(serve_proc):
    rng = random.Random(SEED)
    cases = [make_case(rng, i) for i in range(CASES)]
    assert len(set(cases)) > CASES * 0.9  # the corpus is varied, not one case repeated
    server = serve_proc("--predictor", predictor("http_echo.py"), "--log-format", "text",
                        env={"MINICOG_READ_TIMEOUT": "1", "MINICOG_HEADER_TIMEOUT": "1", "COG_LOG_LEVEL": "info"})
    server.wait_ready()
    port = server.port
    threads_idle = _threads(server.proc.pid)
    statuses: dict[Optional[int], int] = {}
    lock = threading.Lock()
    failures: list[str] = []

    def run(i: int) -> None:
        try:
            status, answer = exchange(port, cases[i])
        except AssertionError as exc:
            with lock:
                failures.append(f"case {i}: {exc}")
            return
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
            if status is not None and status >= 500 and status != 505:
                failures.append(f"case {i}: {status} to {cases[i][:300]!r}: {answer[:300]!r}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as ex:
        list(ex.map(run, range(CASES)))
    elapsed = time.monotonic() - t0
    print(f"{CASES} cases in {elapsed:.1f}s: {sorted(statuses.items(), key=str)}")
    assert not failures, "\n".join(failures[:10])
    # The corpus reached past the parser: predictions ran and validation answered.
    assert statuses.get(200, 0) > 50 and statuses.get(422, 0) > 15 and statuses.get(400, 0) > 200, statuses
    assert server.proc.poll() is None, "the server died"
    status, doc = server.request("POST", "/predictions", {"input": {"text": "after"}})
    assert status == 200 and doc["status"] == "succeeded" and doc["output"] == "after"
    status, health = server.request("GET", "/health-check")
    assert health["status"] == "READY", health
    # The request threads leave once idle (Settings.http_thread_idle_timeout, 5 s): the
    # corpus leaves no thread behind.
    wait_until(lambda: _threads(server.proc.pid) <= threads_idle + 1, timeout=30,
               message=f"the server back to its {threads_idle} idle threads")
    tracebacks = [line for line in server.lines if "Traceback" in line or "Error:" in line and "File " in line]
    assert not tracebacks, "\n".join(server.lines[-60:])
    print(f"{CASES} cases in {elapsed:.1f}s: {sorted(statuses.items(), key=str)}")
