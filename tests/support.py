"""Small helpers shared by the tests: deadlines instead of sleeps, loopback receivers.

Everything here is test scaffolding; nothing in it stands in for a part of minicog.
"""

from __future__ import annotations

import http.server
import json
import os
import sys
import threading
import time
from typing import Any, Callable, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREDICTORS = os.path.join(ROOT, "tests", "predictors")


def predictor(name: str) -> str:
    """Absolute path of a file in tests/predictors/ (append ':Class' yourself if needed)."""
    return os.path.join(PREDICTORS, name)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, message: str = "condition") -> Any:
    """Poll *predicate* until it returns something truthy; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Recorded:
    """One request seen by a :class:`Receiver`."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes, at: float):
        self.method, self.path, self.headers, self.body, self.at = method, path, headers, body, at

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request (webhooks, uploads).

    ``responder(recorded) -> (status, headers, body)`` decides the answer; the default
    answers 200 with an empty JSON object.  Use as a context manager.
    """

    def __init__(self, responder: Optional[Callable[[Recorded], tuple[int, dict[str, str], bytes]]] = None):
        self.requests: list[Recorded] = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                status, headers, out = (responder or (lambda r: (200, {"Content-Type": "application/json"}, b"{}")))(rec)
                with receiver.cond:
                    receiver.requests.append(rec)
                    receiver.cond.notify_all()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_POST = do_PUT = do_GET = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Callable[[list[Recorded]], Any], timeout: float = 10.0) -> Any:
        """Block until *predicate(requests)* is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate(list(self.requests))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver timed out; saw {[(r.method, r.path) for r in self.requests]}")
                self.cond.wait(left)


PYTHON = sys.executable
