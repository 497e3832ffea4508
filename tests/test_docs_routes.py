"""The /docs routes over plain HTTP: the page's files, the HTML link from /, the routes it runs with, the off switch.

The page itself is driven in a browser in test_docs_page.py; these tests check
what the server answers, on every supported Python.
"""

from __future__ import annotations

import html.parser
import os
import re

from http_helpers import call, running
from minicog.server import docs
from minicog.settings import Settings
from support import wait_until

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


def test_the_page_and_its_files_are_served_with_a_strict_policy():
    with running("page_every_input.py") as svc:
        r = call(svc, "GET", "/docs")
        assert r.status == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        csp = r.headers["content-security-policy"]
        assert "connect-src 'self'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp
        assert b'<script src="docs/page.js"' in r.body
        js = call(svc, "GET", "/docs/page.js")
        assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
        assert js.body == open(os.path.join(docs.PAGE_DIR, "page.js"), "rb").read()
        css = call(svc, "GET", "/docs/page.css")
        assert css.status == 200 and css.headers["content-type"].startswith("text/css")
        head = call(svc, "HEAD", "/docs")
        assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) == len(r.body)
        slash = call(svc, "GET", "/docs/")
        assert slash.status == 308 and slash.headers["location"] == "../docs"
        missing = call(svc, "GET", "/docs/nothing-here.js")
        assert missing.status == 404 and "Not found" in missing.json()["error"]
        wrong = call(svc, "POST", "/docs/page.js", {})
        assert wrong.status == 405 and wrong.headers["allow"] == "GET, HEAD" and "error" in wrong.json()


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("src", "href", "action") and v]


def test_the_page_refers_to_nothing_outside_the_server():
    parser = _Refs()
    with open(os.path.join(docs.PAGE_DIR, "index.html"), encoding="utf-8") as f:
        parser.feed(f.read())
    assert parser.refs and all(not re.match(r"^([a-z]+:|//)", ref) for ref in parser.refs), parser.refs
    for name in ("index.html", "page.js", "page.css"):
        with open(os.path.join(docs.PAGE_DIR, name), encoding="utf-8") as f:
            text = f.read()
        # No absolute URL (a CDN, a web font, an analytics host) anywhere in the page's files.
        assert not re.findall(r"https?://[A-Za-z0-9]", text), name
        assert "@import" not in text and "url(" not in text, name


def test_root_links_the_page_for_browsers_and_stays_json_for_clients():
    with running("page_every_input.py") as svc:
        expected = call(svc, "GET", "/").json()
        for accept in (None, "*/*", "application/json", "application/json, text/html;q=0.5", "text/*;q=0.2, */*"):
            r = call(svc, "GET", "/", headers={"Accept": accept} if accept else {})
            assert r.headers["content-type"] == "application/json" and r.json() == expected, accept
        page = call(svc, "GET", "/", headers={"Accept": BROWSER_ACCEPT})
        assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert b"<a id=docs-link href='docs'>" in page.body and page.headers["vary"] == "Accept"
        assert b"/predictions/{prediction_id}/cancel" in page.body  # the discovery links, as text


def test_docs_can_be_turned_off():
    with running("page_every_input.py", settings={"docs": False}) as svc:
        for path in ("/docs", "/docs/page.js", "/docs/predictions/x"):
            r = call(svc, "GET", path)
            assert r.status == 404 and r.json() == {"error": f"Not found: {path}"}
        r = call(svc, "GET", "/", headers={"Accept": BROWSER_ACCEPT})
        assert r.headers["content-type"] == "application/json" and r.json()["docs_url"] == "/docs"
    assert Settings.from_env({"MINICOG_DOCS": "0"}).docs is False
    assert Settings.from_env({}).docs is True


def test_serve_no_docs_flag(serve_proc):
    proc = serve_proc("--predictor", os.path.join(os.path.dirname(__file__), "predictors", "page_no_inputs.py"), "--no-docs")
    assert call(proc.port, "GET", "/docs").status == 404
    assert call(proc.port, "GET", "/openapi.json", timeout=30).status in (200, 503)


def test_prefers_html_reads_q_values():
    assert docs.prefers_html([BROWSER_ACCEPT])
    assert docs.prefers_html(["text/html"])
    assert not docs.prefers_html([])
    assert not docs.prefers_html(["*/*"])
    assert not docs.prefers_html(["text/html;q=0.5, application/json"])
    assert not docs.prefers_html(["text/html;q=0"])
    assert docs.prefers_html(["application/json;q=0.1, text/html"])


def test_the_page_has_no_run_routes_of_its_own():
    # Runs belong to the server's records (Cog's routes, with their retention); /docs serves files only.
    with running("page_every_input.py") as svc:
        for method, body in (("PUT", {"input": {"prompt": "x"}}), ("GET", None), ("POST", {})):
            for path in ("/docs/predictions/p-1", "/docs/predictions/p-1/events", "/docs/trainings/p-1"):
                r = call(svc, method, path, body)
                assert r.status == 404 and r.json() == {"error": f"Not found: {path}"}, (method, path)
        assert svc.find("p-1") is None  # nothing ran
    js = open(os.path.join(docs.PAGE_DIR, "page.js"), encoding="utf-8").read()
    assert "docs/predictions" not in js and "/events" not in js
    assert not hasattr(docs, "PageRuns")


def test_the_routes_the_page_runs_with():
    """What the page relies on in Cog's API: an async PUT with its own id, the state with logs
    while it runs, the final state read again later (after a reload), 422s by input."""
    with running("page_every_input.py") as svc:
        r = call(svc, "PUT", "/predictions/run-1", {"id": "run-1", "input": {"prompt": "hi", "sleep": 0.6}},
                 headers={"Prefer": "respond-async"})
        assert r.status == 202 and r.json() == {"id": "run-1", "status": "starting"}
        state = wait_until(lambda: (s := call(svc, "GET", "/predictions/run-1").json()).get("logs") and s,
                           message="logs while running")
        assert state["status"] == "processing" and "starting" in state["logs"] and state["input"]["prompt"] == "hi"
        final = wait_until(lambda: (s := call(svc, "GET", "/predictions/run-1").json())["status"] == "succeeded" and s,
                           message="the end")
        assert final["output"].startswith("hello: hi") and "predict_time" in final["metrics"]
        assert call(svc, "GET", "/predictions/run-1").json() == final  # a reloaded page finds it
        assert call(svc, "GET", "/predictions/other").status == 404  # the page then says the run is lost
        bad = call(svc, "PUT", "/predictions/bad-1", {"input": {"steps": 1000}}, headers={"Prefer": "respond-async"})
        assert bad.status == 422
        locs = {tuple(d["loc"]) for d in bad.json()["detail"]}
        assert ("body", "input", "steps") in locs and ("body", "input", "prompt") in locs
        # A model that does not stream has no event stream to follow: the page polls.
        r = call(svc, "GET", "/predictions/run-1", headers={"Accept": "text/event-stream"})
        assert r.status == 406 and "error" in r.json()
