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


class ServeProcess:
    """A real ``python -m minicog serve`` subprocess on 127.0.0.1, port 0.

    The port is read from the server's "serving ... on http://127.0.0.1:N" log line;
    stderr lines are kept (without their newline) in ``lines``.  *tmp_dir* becomes the
    server's TMPDIR (unless *env* names one): :meth:`close` kills the server, and a
    killed server leaves its temporary folder behind, so it must not be in /tmp.
    """

    TIMEOUT = 60

    def __init__(self, *args: str, cwd: str = ROOT, env: Optional[dict] = None, new_session: bool = False,
                 tmp_dir: Optional[str] = None):
        import queue
        import subprocess

        environ = {**os.environ, "MINICOG_SHUTDOWN_GRACE_PERIOD": "5", **({"TMPDIR": tmp_dir} if tmp_dir else {}),
                   **(env or {})}
        if "PORT" not in (env or {}):
            environ.pop("PORT", None)
        environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "minicog", "serve", "--host", "127.0.0.1", "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ, cwd=cwd,
                                     start_new_session=new_session)
        self.lines: list[str] = []
        self._q: "queue.Queue[Optional[str]]" = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)  # join it to get every line
        self.thread.start()
        self.port = 0

    def _read(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)  # end of output: the process is gone

    def wait_line(self, pattern: str, timeout: float = TIMEOUT):
        """The first match of *pattern* in a log line, waiting up to *timeout* seconds."""
        import queue
        import re

        rx = re.compile(pattern)
        for line in list(self.lines):
            if m := rx.search(line):
                return m
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no log line matching {pattern!r}; saw: {self.lines[-20:]}")
            if line is None:
                raise AssertionError(f"server exited ({self.proc.wait(10)}) before logging {pattern!r}: {self.lines[-20:]}")
            if m := rx.search(line):
                return m

    def wait_listening(self) -> int:
        self.port = int(self.wait_line(r"on http://127\.0\.0\.1:(\d+)").group(1))
        return self.port

    def request(self, method: str, path: str, body: Any = None, headers: Optional[dict] = None) -> tuple[int, Any]:
        """(status, decoded JSON body or None)."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.TIMEOUT)
        try:
            hdrs = {"Content-Type": "application/json"} if body is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()

    def wait_ready(self) -> dict:
        """Wait for READY (failing fast on any status other than STARTING); the health body."""
        if not self.port:
            self.wait_listening()

        def ready():
            health = self.request("GET", "/health-check")[1]
            assert health["status"] in ("STARTING", "READY"), health
            return health if health["status"] == "READY" else None

        return wait_until(ready, timeout=self.TIMEOUT, message="READY")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
