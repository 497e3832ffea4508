"""Helpers for the HTTP tests: start a real Service on 127.0.0.1:0 and talk to it with http.client."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import tempfile
from typing import Any, Iterator, Optional

from minicog.server.service import Service
from minicog.settings import Settings
from support import predictor, wait_until

#: Short timeouts so failures surface fast.
FAST = dict(shutdown_grace_period=3.0, read_timeout=5.0, webhook_backoff_base=0.01, webhook_timeout=3.0,
            throttle_response_interval=0.0, disconnect_poll_interval=0.02, cancel_grace_period=2.0)


@contextlib.contextmanager
def running(name: str, *, ready: bool = True, env: Optional[dict] = None, **kw: Any) -> Iterator[Service]:
    """A started Service for tests/predictors/*name* (READY unless ``ready=False``), stopped at the end.

    The workers get a TMPDIR of their own, removed once they are stopped: a fixture
    model that writes its outputs with tempfile (http_files.py) leaves nothing in /tmp.
    """
    settings_kw = {**FAST, **kw.pop("settings", {})}
    worker_tmp = tempfile.mkdtemp(prefix="worker-tmp-")
    env = {**os.environ, "TMPDIR": worker_tmp} if env is None else {"TMPDIR": worker_tmp, **env}
    try:
        svc = Service(predictor(name), host="127.0.0.1", port=0, settings=Settings(**settings_kw), env=env, **kw)
        svc.start()
        try:
            if ready:
                assert svc.wait_ready(30), f"{name} did not become ready: {svc.orchestrator.state} {svc.orchestrator.setup.logs}"
            yield svc
        finally:
            svc.stop(timeout=5)
    finally:
        shutil.rmtree(worker_tmp, ignore_errors=True)


class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:300]!r}>"


def call(svc_or_port: Any, method: str, path: str, body: Any = None, *, headers: Optional[dict] = None,
         raw: Optional[bytes] = None, timeout: float = 20.0, conn: Optional[http.client.HTTPConnection] = None) -> Response:
    """One request; *body* is JSON-encoded with Content-Type application/json unless *raw* is given."""
    port = svc_or_port if isinstance(svc_or_port, int) else svc_or_port.port
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        out = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        return out
    finally:
        if own:
            c.close()


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


def sse_events(resp: http.client.HTTPResponse, limit: int = 100000) -> Iterator[dict]:
    """Parse an SSE response into dicts {id, event, data(parsed), comment}."""
    ev: dict = {}
    while limit:
        line = resp.fp.readline() if False else resp.readline()
        if not line:
            return
        line = line.decode("utf-8").rstrip("\n")
        if line == "":
            if ev:
                if "data" in ev:
                    ev["data"] = json.loads(ev["data"])
                yield ev
                limit -= 1
            ev = {}
            continue
        if line.startswith(":"):
            yield {"comment": line[1:].strip()}
            continue
        key, _, value = line.partition(": ")
        ev[key] = value


__all__ = ["running", "call", "Response", "raw_exchange", "sse_events", "FAST", "wait_until"]
