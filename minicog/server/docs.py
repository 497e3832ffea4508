"""The browser page at ``/docs``: try the model without curl, with nothing fetched from outside.

Cog's old server served Swagger UI at ``/docs`` (scripts from a CDN); coglet
advertises ``docs_url: /docs`` and answers 404.  minicog serves three static files
that ship in the package (``minicog/server/page/``): the page reads
``/openapi.json`` and builds its form from the live schema, so nothing about a
model is written here.  Every answer carries a Content-Security-Policy that lets
the browser fetch scripts, styles and data only from this server (images and
media may also come from an ``--upload-url`` host, since outputs can live there).

Runs started from the page go through :meth:`App.create` like any request, but
the page keeps them: a prediction created with ``PUT /docs/predictions/{id}``
is registered in :class:`PageRuns`, which holds a reference on its files while it
runs and keeps its final answer (rendered once, files inlined) for a bounded number
of runs afterwards.  That is what lets the page survive a reload (it finds its
run again by id with ``GET /docs/predictions/{id}``) and read a non-streaming
run's logs while it runs; Cog's API forgets a prediction as soon as it ends and
would run it again on a second ``PUT``.  Streaming runs are followed with
``GET /docs/predictions/{id}/events`` (SSE, the same events as Cog's), which
attaches to a run in flight and never starts one; a reader that goes away does
not cancel the run (the page's Cancel button does).

Routes (all under ``/docs``; ``Settings.docs`` = ``MINICOG_DOCS`` turns them off)::

    GET  /docs                         the page (index.html)
    GET  /docs/page.js, /docs/page.css its script and style
    PUT  /docs/{predictions|trainings}/{id}   start a run (Cog's body), 202
    GET  /docs/{predictions|trainings}/{id}   the run's state (Cog's response body)
    GET  /docs/{predictions|trainings}/{id}/events   SSE of a streaming run in flight

``GET /`` with an ``Accept`` header preferring HTML gets a short HTML page
linking to ``/docs``; every other client keeps the JSON discovery document.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import json
import os
import threading
import time
from collections import OrderedDict
from typing import Any, Optional

from minicog.errors import NotFound, RequestError
from minicog.server.outputs import render_json

__all__ = ["PAGE_DIR", "CSP", "PageRuns", "handle", "prefers_html", "send_root_html"]

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")

# Static files by the name after /docs/ ("" is the page itself).
_STATIC = {
    "": ("index.html", "text/html; charset=utf-8"),
    "page.js": ("page.js", "text/javascript; charset=utf-8"),
    "page.css": ("page.css", "text/css; charset=utf-8"),
}

#: Only this server for scripts, styles and requests; outputs may be images or media
#: uploaded elsewhere (--upload-url), so img/media also allow http(s) and data: URIs.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data: blob: http: https:; media-src 'self' data: blob: http: https:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_KINDS = {"predictions": "prediction", "trainings": "training"}


class _Run:
    __slots__ = ("pred", "final", "ended_at")

    def __init__(self, pred: Any):
        self.pred = pred
        self.final: Optional[bytes] = None  # the terminal answer, rendered once
        self.ended_at: Optional[float] = None


class PageRuns:
    """Runs started from the page: live records while they run, their final answers after.

    A live run holds one reference on its record's files (the one :meth:`App.create`
    gives its caller).  A thread per run waits for the end, renders the final answer
    to bytes (file outputs inlined as data: URIs or their upload URLs) and gives the
    reference back, so the output folder goes as soon as the run ends and shutdown
    never waits for the page.  At most ``keep`` finished runs are kept (oldest
    dropped first); an answer larger than ``max_bytes`` is kept without its output.
    """

    def __init__(self, keep: int, max_bytes: int):
        self.keep = keep
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._runs: "OrderedDict[tuple[str, str], _Run]" = OrderedDict()

    def add(self, kind: str, pred: Any) -> None:
        """Register *pred*, taking over the caller's reference on its files."""
        run = _Run(pred)
        with self._lock:
            # An earlier run with the same id is forgotten here; its waiter thread still
            # gives its reference back when that run ends.
            self._runs.pop((kind, pred.id), None)
            self._runs[(kind, pred.id)] = run
        threading.Thread(target=self._finish, args=(run,), name=f"docs-run-{pred.id}", daemon=True).start()

    def _finish(self, run: _Run) -> None:
        pred = run.pred
        try:
            pred.wait(None)
            snap = pred.snapshot(with_input=True)
            body = render_json(snap)
            if body.length > self.max_bytes:
                snap.pop("output", None)
                snap["docs_note"] = (f"The output ({body.length} bytes of JSON) is larger than the page keeps "
                                     f"({self.max_bytes} bytes); run it with curl or the CLI to get it.")
                body = render_json(snap)
            final = body.materialize()
        except Exception as exc:  # a file output vanished: say so rather than lose the run
            final = json.dumps({"id": pred.id, "status": pred.status, "error": f"Result unavailable: {exc}"}).encode()
        # The final answer is in place before the files go: a reader that finds the record
        # released (retain() False) then always finds the answer.
        with self._lock:
            run.final = final
            run.ended_at = time.monotonic()
            finished = [k for k, r in self._runs.items() if r.final is not None]
            for key in finished[:max(0, len(finished) - self.keep)]:
                del self._runs[key]
        pred.release()

    def get(self, kind: str, pid: str) -> Optional[_Run]:
        with self._lock:
            return self._runs.get((kind, pid))


@functools.lru_cache(maxsize=None)
def _static(name: str) -> bytes:
    # Through importlib.resources, so the page is found in a zip or vendored install too.
    return importlib.resources.files("minicog.server").joinpath("page").joinpath(name).read_bytes()


def _runs(handler: Any) -> PageRuns:
    server = handler.server
    runs = getattr(server, "docs_runs", None)
    if runs is None:
        with _runs_lock:
            runs = getattr(server, "docs_runs", None)
            if runs is None:
                s = server.settings
                runs = server.docs_runs = PageRuns(s.docs_finished_runs, s.docs_finished_run_max_bytes)
    return runs


_runs_lock = threading.Lock()


def _media_q(accept: str, media: str) -> float:
    """The q value *accept* gives *media* (most specific matching range wins)."""
    best, best_rank = 0.0, -1
    kind = media.split("/", 1)[0]
    for item in accept.split(","):
        fields = item.strip().split(";")
        rng = fields[0].strip().lower()
        if rng == media:
            rank = 2
        elif rng == kind + "/*":
            rank = 1
        elif rng == "*/*":
            rank = 0
        else:
            continue
        q = 1.0
        for param in fields[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if rank > best_rank:
            best, best_rank = q, rank
    return best


def prefers_html(accept_values: list[str]) -> bool:
    """True if the Accept header(s) rank text/html above application/json (a browser's do)."""
    accept = ",".join(accept_values)
    if not accept:
        return False
    return _media_q(accept, "text/html") > _media_q(accept, "application/json")


def send_root_html(handler: Any, discovery: dict) -> None:
    """``GET /`` for a browser: the discovery document's links, and the page's first."""
    rows = "".join(
        f'<li><code>{html.escape(k)}</code>: '
        + (f'<a href="{html.escape(v.lstrip("/") or ".")}">{html.escape(v)}</a>' if "{" not in v and k.endswith("url") and v != "/shutdown"
           else html.escape(str(v)))
        + "</li>"
        for k, v in discovery.items())
    text = ("<!doctype html><html lang=en><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<meta name=color-scheme content='light dark'><title>minicog</title>"
            "<link rel=stylesheet href='docs/page.css'><body><div class='root panel'>"
            "<h1>minicog</h1><p class=open><a id=docs-link href='docs'>Open the page to try the model</a></p>"
            "<p class=muted>The API's discovery document (other clients get it as JSON):</p>"
            f"<ul>{rows}</ul></div></body></html>")
    _send(handler, 200, text.encode("utf-8"), "text/html; charset=utf-8", {"Vary": "Accept"})


def _send(handler: Any, status: int, data: bytes, content_type: str, extra: Optional[dict] = None) -> None:
    from minicog.server.outputs import Body
    headers = dict(_SECURITY_HEADERS)
    headers.update(extra or {})
    handler._send_body(status, Body([data]), content_type, headers)


def handle(handler: Any, path: str, body: bytes) -> None:
    """Answer a request under ``/docs`` (the router calls this for every such path)."""
    rest = path[len("/docs"):]
    method = "GET" if handler.command == "HEAD" else handler.command
    if rest in ("", "/") or rest[1:] in _STATIC:
        if method != "GET":
            handler._send_json(405, {"error": f"Method {handler.command} not allowed on {path}"}, {"Allow": "GET, HEAD"})
            return
        if rest == "/":
            # Relative links in the page resolve against /docs, not /docs/.
            handler._send_body(308, render_json({"location": "../docs"}), "application/json", {"Location": "../docs"})
            return
        name, ctype = _STATIC[rest[1:]]
        _send(handler, 200, _static(name), ctype)
        return
    parts = rest.split("/")  # ["", "predictions", id] or ["", "predictions", id, "events"]
    if len(parts) not in (3, 4) or parts[1] not in _KINDS or not parts[2] or (len(parts) == 4 and parts[3] != "events"):
        handler._send_json(404, {"error": f"Not found: {path}"})
        return
    import urllib.parse

    from minicog.server.http import check_id, parse_prediction_request
    kind = _KINDS[parts[1]]
    pid = check_id(urllib.parse.unquote(parts[2]), handler.server.settings)
    allowed = "GET, HEAD" if len(parts) == 4 else "GET, HEAD, PUT"
    if method not in allowed.split(", "):
        handler._send_json(405, {"error": f"Method {handler.command} not allowed on {path}"}, {"Allow": allowed})
        return
    app, runs = handler.server.app, _runs(handler)
    if method == "PUT":
        req = parse_prediction_request(handler.headers.get("Content-Type"), body, handler.server.settings)
        if req.id is not None and req.id != pid:
            raise RequestError("The id in the body must match the id in the URL")
        req.id, req.webhook = pid, None  # the page follows its runs itself
        pred, created = app.create(kind, req, sse=False, headers={}, put=True)
        if created:
            runs.add(kind, pred)
        handler._send_json(202, {"id": pred.id, "status": pred.status})
        return
    run = runs.get(kind, pid)
    if len(parts) == 4:
        pred = run.pred if run is not None and run.final is None else app.find_inflight(pid)
        if pred is None or pred.events is None or not pred.retain():
            raise NotFound(f"No streaming {kind} {pid!r} in flight")
        try:
            handler._stream(pred, True)
        finally:
            pred.release()
        return
    if run is not None and run.final is not None:
        _send(handler, 200, run.final, "application/json")
        return
    pred = run.pred if run is not None else app.find_inflight(pid)
    if pred is not None and pred.retain():
        try:
            handler._send_json(200, pred.snapshot(with_input=True), {"Cache-Control": "no-store"})
        finally:
            pred.release()
        return
    run = runs.get(kind, pid)  # it may have ended between the two looks
    if run is not None and run.final is not None:
        _send(handler, 200, run.final, "application/json")
        return
    raise NotFound(f"No {kind} {pid!r} is known to this page (finished runs are kept only for a while)")
