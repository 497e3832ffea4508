"""The browser page at ``/docs``: try the model without curl, with nothing fetched from outside.

Cog's old server served Swagger UI at ``/docs`` (scripts from a CDN); coglet
advertises ``docs_url: /docs`` and answers 404.  minicog serves three static files
that ship in the package (``minicog/server/page/``): the page reads
``/openapi.json`` and builds its form from the live schema, so nothing about a
model is written here.  Every answer carries a Content-Security-Policy that lets
the browser fetch scripts, styles and data only from this server (images and
media may also come from an ``--upload-url`` host, since outputs can live there).

The page keeps no state on the server: it runs the model through Cog's public
routes like any client, so the records and their retention
(:mod:`minicog.server.service`) are the one owner of every run.  It creates a run
with ``PUT /predictions/{id}`` and ``Prefer: respond-async`` (an id of its own,
kept in the tab's ``sessionStorage``), follows it with ``GET /predictions/{id}``
(polling) or, for a ``@streaming`` model, ``GET /predictions/{id}`` with
``Accept: text/event-stream`` (which attaches and never starts a run, so a reader
that goes away cancels nothing), cancels it with ``POST /predictions/{id}/cancel``
and, after a reload, finds it again by the same GETs: finished predictions stay
readable for ``Settings.retention_seconds``.

Routes (``Settings.docs`` = ``MINICOG_DOCS`` turns them off)::

    GET  /docs                         the page (index.html)
    GET  /docs/page.js, /docs/page.css its script and style

``GET /`` with an ``Accept`` header preferring HTML gets a short HTML page
linking to ``/docs``; every other client keeps the JSON discovery document.
"""

from __future__ import annotations

import functools
import html
import importlib.resources
import os
from typing import Any, Optional

from minicog.server.outputs import Body, render_json

__all__ = ["PAGE_DIR", "CSP", "handle", "prefers_html", "send_root_html"]

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


@functools.lru_cache(maxsize=None)
def _static(name: str) -> bytes:
    # Through importlib.resources, so the page is found in a zip or vendored install too.
    return importlib.resources.files("minicog.server").joinpath("page").joinpath(name).read_bytes()


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
    headers = dict(_SECURITY_HEADERS)
    headers.update(extra or {})
    handler._send_body(status, Body([data]), content_type, headers)


def handle(handler: Any, path: str, body: bytes) -> None:
    """Answer a request under ``/docs`` (the router calls this for every such path)."""
    rest = path[len("/docs"):]
    method = "GET" if handler.command == "HEAD" else handler.command
    if rest not in ("", "/") and rest[1:] not in _STATIC:
        handler._send_json(404, {"error": f"Not found: {path}"})
        return
    if method != "GET":
        handler._send_json(405, {"error": f"Method {handler.command} not allowed on {path}"}, {"Allow": "GET, HEAD"})
        return
    if rest == "/":
        # Relative links in the page resolve against /docs, not /docs/.
        handler._send_body(308, render_json({"location": "../docs"}), "application/json", {"Location": "../docs"})
        return
    name, ctype = _STATIC[rest[1:]]
    _send(handler, 200, _static(name), ctype)
