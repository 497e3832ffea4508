"""The /docs routes over plain HTTP: the page's files, the HTML link from /, the page's run routes, the off switch.

The page itself is driven in a browser in test_docs_page.py; these tests check
what the server answers, on every supported Python.
"""

from __future__ import annotations

import html.parser
import http.client
import json
import os
import re

from http_helpers import call, running, sse_events
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


def test_a_page_run_is_followed_and_kept_after_it_ends():
    with running("page_every_input.py") as svc:
        r = call(svc, "PUT", "/docs/predictions/run-1", {"input": {"prompt": "hi", "sleep": 0.6}})
        assert r.status == 202 and r.json()["id"] == "run-1"
        # While it runs: its state, logs included (Cog's API has no such read).
        state = wait_until(lambda: (s := call(svc, "GET", "/docs/predictions/run-1").json()).get("logs") and s,
                           message="logs while running")
        assert state["status"] == "processing" and "starting" in state["logs"] and state["input"]["prompt"] == "hi"
        final = wait_until(lambda: (s := call(svc, "GET", "/docs/predictions/run-1").json())["status"] == "succeeded" and s,
                           message="the end")
        assert final["output"].startswith("hello: hi") and "predict_time" in final["metrics"]
        # Still there later (a reloaded page finds it), and a PUT of Cog's API would run it again.
        assert call(svc, "GET", "/docs/predictions/run-1").json() == final
        assert call(svc, "GET", "/docs/predictions/other").status == 404
        assert call(svc, "GET", "/docs/trainings/run-1").status == 404


def test_page_run_errors_are_cog_errors():
    with running("page_every_input.py") as svc:
        bad = call(svc, "PUT", "/docs/predictions/bad-1", {"input": {"steps": 1000}})
        assert bad.status == 422
        locs = {tuple(d["loc"]) for d in bad.json()["detail"]}
        assert ("body", "input", "steps") in locs and ("body", "input", "prompt") in locs
        assert call(svc, "PUT", "/docs/predictions/a", {"id": "b", "input": {}}).status == 400
        assert call(svc, "PUT", "/docs/predictions/x", raw=b"{", headers={"Content-Type": "application/json"}).status == 400
        assert call(svc, "GET", "/docs/predictions/has%20space").status == 400
        # A non-streaming model has no event stream to attach to.
        call(svc, "PUT", "/docs/predictions/plain", {"input": {"prompt": "x", "sleep": 0.5}})
        r = call(svc, "GET", "/docs/predictions/plain/events", headers={"Accept": "text/event-stream"})
        assert r.status == 404 and "error" in r.json()
        assert call(svc, "DELETE", "/docs/predictions/plain").status == 405


def test_finished_page_runs_are_bounded():
    with running("page_no_inputs.py", settings={"docs_finished_runs": 2}) as svc:
        for i in range(3):
            assert call(svc, "PUT", f"/docs/predictions/n{i}", {"input": {}}).status == 202
            wait_until(lambda: call(svc, "GET", f"/docs/predictions/n{i}").json().get("status") == "succeeded",
                       message=f"run n{i}")
        wait_until(lambda: call(svc, "GET", "/docs/predictions/n0").status == 404, message="the oldest dropped")
        assert call(svc, "GET", "/docs/predictions/n2").json()["output"]["answer"] == 42


def test_a_streaming_page_run_survives_its_reader_leaving():
    with running("http_stream.py") as svc:
        assert call(svc, "PUT", "/docs/predictions/s1", {"input": {"n": 6, "gap": 0.1}}).status == 202
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
        conn.request("GET", "/docs/predictions/s1/events", headers={"Accept": "text/event-stream"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        first = next(e for e in sse_events(resp) if e.get("event") == "output")
        assert first["data"]["chunk"] == "tok0"
        conn.close()  # the page reloads: its reader goes away
        final = wait_until(lambda: (s := call(svc, "GET", "/docs/predictions/s1").json())["status"] != "processing" and s,
                           timeout=20, message="the end")
        assert final["status"] == "succeeded" and final["output"] == [f"tok{i}" for i in range(6)]
        # Reattaching after the end: the state says it all; no stream is left to follow.
        assert call(svc, "GET", "/docs/predictions/s1/events").status == 404


def test_a_page_run_gives_its_files_back_when_it_ends(tmp_path):
    def files_left():
        return [os.path.join(root, f) for root, _, names in os.walk(tmp_path) for f in names]

    # Without the retention of finished predictions (which holds their files on its own).
    with running("page_image.py:InFolder", settings={"tmp_dir": str(tmp_path), "retention_seconds": 0,
                                                     "retention_max_records": 0}) as svc:
        assert call(svc, "PUT", "/docs/predictions/img-1", {"input": {}}).status == 202
        final = wait_until(lambda: (s := call(svc, "GET", "/docs/predictions/img-1").json())["status"] == "succeeded" and s,
                           message="the end")
        # The answer the page keeps has the image inlined, so the output file (written by the
        # worker into the prediction's folder) is not needed any more.
        assert final["output"].startswith("data:image/png;base64,")
        wait_until(lambda: not files_left(), message="the prediction's output file to be removed")
        assert call(svc, "GET", "/docs/predictions/img-1").json() == final
