"""The browser page at /docs, driven in a real headless Chromium (tests/chromium.py).

Each test loads the page from a real server (``serve_in_thread`` on 127.0.0.1,
port 0, a real worker) and reads the DOM back through the DevTools protocol.
Chromium runs with a proxy that fails every host but 127.0.0.1, and each page's
requests are checked to have gone to the server only.  Screenshots (the default
model, an image model, phone width in dark mode) are written to ``artifacts/``
(git-ignored; ``MINICOG_ARTIFACTS`` moves it) for people to look at.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
import zlib

import pytest

from chromium import Browser, find_chromium
from minicog.embed import serve_in_thread

HERE = os.path.dirname(os.path.abspath(__file__))
PREDICTORS = os.path.join(HERE, "predictors")
ARTIFACTS = os.environ.get("MINICOG_ARTIFACTS") or os.path.join(os.path.dirname(HERE), "artifacts")

# Several seconds each (a browser tab, a worker, a run): full runs only.
pytestmark = pytest.mark.slow

CHROMIUM = find_chromium()
if CHROMIUM is None:
    if os.environ.get("MINICOG_REQUIRE_CHROMIUM") == "1":
        raise RuntimeError("MINICOG_REQUIRE_CHROMIUM=1 but no chromium binary was found on PATH")
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason="chromium is not installed (apt-get install chromium; .ci/run installs it)")]


@pytest.fixture(scope="module")
def browser():
    b = Browser(CHROMIUM)
    yield b
    b.close()


@contextlib.contextmanager
def _server(ref, **kw):
    """A served model, stopped at the end; its workers get a TMPDIR removed afterwards.

    page_image.py writes its images with tempfile and never removes them, as a real
    model may: they must not pile up in /tmp.
    """
    worker_tmp = tempfile.mkdtemp(prefix="page-tmp-")
    try:
        with serve_in_thread(os.path.join(PREDICTORS, ref) if ref else None, wait_ready=120,
                             env={**os.environ, "TMPDIR": worker_tmp}, **kw) as handle:
            yield handle
    finally:
        shutil.rmtree(worker_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def every_input():
    with _server("page_every_input.py") as h:
        yield h


@pytest.fixture(scope="module")
def default_model():
    with _server(None) as h:
        yield h


@pytest.fixture(scope="module")
def image_model():
    with _server("page_image.py") as h:
        yield h


@pytest.fixture
def open_page(browser):
    pages = []

    def open_(server, **kw):
        page = browser.new_page(**kw)
        pages.append((page, server.url))
        page.goto(server.url + "/docs")
        page.wait_for("document.querySelectorAll('#fields .field, #fields .nofields').length > 0 && !document.querySelector('#run').disabled",
                      timeout=60)
        return page

    yield open_
    for page, url in pages:
        # Nothing the page asked for went anywhere but its server (or stayed in the page).
        try:
            outside = [u for u in page.requests if not (u.startswith(url + "/") or u.startswith(("data:", "blob:")))]
            assert not outside, f"the page requested other hosts: {outside}"
            # Runs go through Cog's routes: under /docs the page asks for its own files only.
            private = [u for u in page.requests if u.startswith(url + "/docs/") and u not in _page_files(url)]
            assert not private, f"the page used routes of its own: {private}"
        finally:
            page.close()


def _page_files(url):
    return (url + "/docs/page.js", url + "/docs/page.css")


def _calls_for(page, server, run_id):
    """(method, Accept header, rest of the path) of each request the page sent to this run's
    URLs in Cog's API, in order."""
    base = server.url + "/predictions/" + run_id
    return [(c["method"], c["accept"], c["url"][len(base):]) for c in list(page.calls)
            if c["url"] == base or c["url"].startswith(base + "/")]


def _canceled_by_cog_route(calls):
    return any(method == "POST" and rest == "/cancel" for method, _, rest in calls)


def _field_kinds(page):
    return page.eval("""Array.from(document.querySelectorAll('#fields .field')).map(f => {
        const c = f.querySelector('input,textarea,select,button');
        return {name: f.dataset.name, tag: c.tagName.toLowerCase(), type: c.type || null,
                required: !!f.querySelector('.req'), help: (f.querySelector('.help') || {}).textContent || null,
                value: c.type === 'checkbox' ? c.checked : c.value, min: c.min || null, max: c.max || null,
                step: c.step || null, options: c.tagName === 'SELECT' ? Array.from(c.options).map(o => o.text) : null,
                listRows: f.querySelectorAll('.list .item').length, hasList: !!f.querySelector('.list'),
                hasUrl: !!f.querySelector('input[type=url]')};
    })""")


def _finished(page, timeout=60):
    return page.wait_for("['succeeded','failed','canceled','unknown'].includes(document.querySelector('#status').textContent) "
                         "&& document.querySelector('#status').textContent", timeout=timeout)


def test_every_input_kind_gets_its_control(open_page, every_input):
    page = open_page(every_input)
    fields = {f["name"]: f for f in _field_kinds(page)}
    # x-order respected: the signature's order.
    assert list(fields) == ["prompt", "title", "steps", "scale", "shout", "flavour", "size", "image", "words",
                            "numbers", "api_key", "seed", "sleep"]
    assert fields["prompt"]["tag"] == "textarea" and fields["prompt"]["required"]
    assert fields["title"]["tag"] == "input" and fields["title"]["type"] == "text" and fields["title"]["value"] == "hello"
    assert not fields["title"]["required"]
    assert (fields["steps"]["type"], fields["steps"]["min"], fields["steps"]["max"], fields["steps"]["step"],
            fields["steps"]["value"]) == ("number", "1", "100", "1", "20")
    assert (fields["scale"]["type"], fields["scale"]["step"], fields["scale"]["value"]) == ("number", "any", "7.5")
    assert fields["shout"]["type"] == "checkbox" and fields["shout"]["value"] is False
    assert fields["flavour"]["tag"] == "select" and fields["flavour"]["options"] == ["plain", "fancy", "<odd>"]
    assert fields["size"]["options"] == ["1", "2", "4"] and fields["size"]["value"] == "1"  # index of the default 2
    assert fields["image"]["type"] == "file" and fields["image"]["hasUrl"]
    assert fields["words"]["hasList"] and fields["words"]["listRows"] == 2
    assert fields["numbers"]["hasList"] and fields["numbers"]["listRows"] == 0
    assert fields["api_key"]["type"] == "password"
    assert fields["seed"]["type"] == "number" and fields["seed"]["value"] == ""
    assert fields["steps"]["help"] == "Number of steps"


def test_description_with_markup_is_shown_as_text(open_page, every_input):
    page = open_page(every_input)
    help_text = page.eval("document.querySelector('[data-name=prompt] .help').textContent")
    assert help_text == "What to say <script>window.__pwned = 1</script> <b>bold?</b>"
    assert page.eval("document.querySelectorAll('#fields script, #fields b').length") == 0
    assert page.eval("typeof window.__pwned") == "undefined"
    # A choice named "<odd>" is an option's text, not markup.
    assert page.eval("document.querySelector('#in-flavour').options[2].text") == "<odd>"


def test_run_with_every_kind_of_value_and_commands(open_page, every_input, tmp_path):
    page = open_page(every_input)
    png = tmp_path / "dot.png"
    png.write_bytes(_tiny_png())
    page.set_value("#in-prompt", "it's <me>")
    page.click("#in-shout")
    page.eval("document.querySelector('#in-flavour').value = '1'")  # fancy
    page.set_files("#in-image", [str(png)])
    page.click("[data-name=numbers] .list > button")
    page.set_value("#in-numbers-0", "7")
    page.set_value("#in-api_key", "s3cret")
    page.wait_for("document.querySelector('#cli-cmd').textContent.includes('image=@dot.png')")
    curl = page.eval("document.querySelector('#curl-cmd').textContent")
    cli = page.eval("document.querySelector('#cli-cmd').textContent")
    assert curl.startswith(f"curl -s -X POST '{every_input.url}/predictions'")
    body = json.loads(curl.split("-d '", 1)[1].rsplit("'", 1)[0].replace("'\\''", "'"))
    assert body["input"]["prompt"] == "it's <me>" and body["input"]["image"].startswith("data:image/png;base64,")
    assert body["input"]["numbers"] == [7] and body["input"]["words"] == ["a", "b"] and body["input"]["shout"] is True
    assert "python -m minicog predict" in cli and "-i 'prompt=it'\\''s <me>'" in cli and "-i 'numbers=7'" in cli
    # The curl command, run as shown (its JSON body posted to the server), gives the page's answer.
    req = urllib.request.Request(every_input.url + "/predictions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        expected = json.load(resp)["output"]
    page.click("#run")
    assert _finished(page) == "succeeded"
    assert page.eval("document.querySelector('#output pre').textContent") == expected
    assert "IMAGE=TRUE" in expected and "KEY=TRUE" in expected and "FANCY" in expected
    page.wait_for("document.querySelector('#logs').textContent.includes('done')")
    assert "starting" in page.eval("document.querySelector('#logs').textContent")
    assert page.eval("document.querySelector('#metrics').textContent").startswith("predict_time")
    assert page.eval("document.querySelector('#elapsed').textContent").endswith(" s")


def test_422_problems_are_shown_next_to_their_inputs(open_page, every_input):
    page = open_page(every_input)
    page.set_value("#in-steps", "1000")
    page.click("#run")
    page.wait_for("!document.querySelector('#in-steps-problem').hidden")
    assert "maximum of 100" in page.eval("document.querySelector('#in-steps-problem').textContent")
    assert "required" in page.eval("document.querySelector('#in-prompt-problem').textContent").lower()
    assert page.eval("document.querySelector('[data-name=title] .problem').hidden") is True
    assert page.eval("document.querySelector('#status').textContent") == "idle"
    # The first input with a problem gets the focus, for keyboard users.
    assert page.eval("document.activeElement.id") == "in-prompt"


def test_cancel_button_cancels_the_run(open_page, every_input):
    page = open_page(every_input)
    page.set_value("#in-prompt", "slow")
    page.set_value("#in-sleep", "30")
    page.click("#run")
    page.wait_for("document.querySelector('#status').textContent === 'processing' && "
                  "document.querySelector('#logs').textContent.includes('starting')")
    run_id = page.eval("document.querySelector('#run-id').textContent")
    page.click("#cancel")
    assert _finished(page) == "canceled"
    assert page.eval("document.querySelector('#run').disabled") is False
    calls = _calls_for(page, every_input, run_id)
    assert calls[0] == ("PUT", "application/json", "") and _canceled_by_cog_route(calls)
    # The server's record says the same (it keeps finished predictions: a reload would find it).
    with urllib.request.urlopen(f"{every_input.url}/predictions/{run_id}", timeout=30) as resp:
        assert json.load(resp)["status"] == "canceled"


def test_keyboard_runs_and_cancels(open_page, every_input):
    page = open_page(every_input)
    page.eval("document.querySelector('#in-prompt').focus()")
    page.eval("document.querySelector('#in-prompt').value = 'typed'")
    page.set_value("#in-sleep", "30")
    page.eval("document.querySelector('#in-prompt').focus()")
    page.press("Enter", code="Enter", key_code=13, modifiers=2)  # Ctrl+Enter
    page.wait_for("document.querySelector('#status').textContent === 'processing'")
    page.press("Escape", code="Escape", key_code=27)
    assert _finished(page) == "canceled"


def test_a_reload_reattaches_to_the_running_prediction(open_page, every_input):
    page = open_page(every_input)
    page.set_value("#in-prompt", "survive")
    page.set_value("#in-sleep", "2.5")
    page.click("#run")
    page.wait_for("document.querySelector('#logs').textContent.includes('starting')")
    run_id = page.eval("document.querySelector('#run-id').textContent")
    page.reload()
    page.wait_for(f"document.querySelector('#run-id').textContent === {json.dumps(run_id)}", timeout=30)
    assert page.eval("document.querySelector('#in-prompt').value") == "survive"  # the inputs come back too
    assert _finished(page) == "succeeded"
    assert "SURVIVE" not in page.eval("document.querySelector('#output').textContent")
    assert "survive" in page.eval("document.querySelector('#output').textContent")
    # One run created (PUT), then followed by id in Cog's API, before and after the reload.
    calls = _calls_for(page, every_input, run_id)
    assert [c for c in calls if c[0] != "GET"] == [("PUT", "application/json", "")]
    assert calls.count(("GET", "application/json", "")) >= 2
    # Reloading after the end shows a fresh form (the finished run is not resumed again).
    page.reload()
    page.wait_for("!document.querySelector('#run').disabled")
    assert page.eval("document.querySelector('#status').textContent") == "idle"


def test_default_model_streams_tokens_into_the_page(open_page, default_model):
    page = open_page(default_model)
    fields = [f["name"] for f in _field_kinds(page)]
    assert fields[0] == "prompt" and "seed" in fields
    assert page.eval("document.querySelector('#model-title').textContent")
    assert "Accept: text/event-stream" in page.eval("document.querySelector('#curl-cmd').textContent")
    page.set_value("#in-max_tokens", "40")
    page.set_value("#in-seed", "7")
    page.set_value("#in-delay", "0.05")
    page.click("#run")
    # Tokens appear while the run is still going: some text, status still processing.
    partial = page.wait_for("document.querySelector('#status').textContent === 'processing' && "
                            "(document.querySelector('#output pre.stream') || {}).textContent", timeout=60)
    assert _finished(page) == "succeeded"
    final = page.eval("document.querySelector('#output pre.stream').textContent")
    assert final.startswith(partial) and len(final) > len(partial)
    # The same seed over the API gives the same text.
    req = urllib.request.Request(default_model.url + "/predictions", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"input": {"max_tokens": 40, "seed": 7}}).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert "".join(json.load(resp)["output"]) == final
    page.screenshot(os.path.join(ARTIFACTS, "docs-default-model.png"))


def test_streaming_cancel_and_reload(open_page, default_model):
    page = open_page(default_model)
    page.set_value("#in-max_tokens", "200")
    page.set_value("#in-delay", "0.1")
    page.click("#run")
    page.wait_for("(document.querySelector('#output pre.stream') || {}).textContent")
    run_id = page.eval("document.querySelector('#run-id').textContent")
    page.reload()  # the stream's reader goes away; the run does not
    page.wait_for(f"document.querySelector('#run-id').textContent === {json.dumps(run_id)} && "
                  "document.querySelector('#status').textContent === 'processing' && "
                  "(document.querySelector('#output pre.stream') || {}).textContent.length > 0", timeout=30)
    page.click("#cancel")
    assert _finished(page) == "canceled"
    # Created once; its tokens read with GET and Accept: text/event-stream, which never starts a
    # run (twice: before and after the reload); canceled with Cog's route.
    calls = _calls_for(page, default_model, run_id)
    assert [c for c in calls if c[0] == "PUT"] == [("PUT", "application/json", "")]
    assert calls.count(("GET", "text/event-stream", "")) == 2 and _canceled_by_cog_route(calls)


def test_a_reload_after_the_run_was_forgotten_says_so_and_runs_nothing(open_page, default_model):
    # The tab remembers a run the server no longer has (restarted, or past its retention).
    page = open_page(default_model)
    page.eval("sessionStorage.setItem('minicog.docs.run', JSON.stringify({id: 'page-forgotten', kind: 'prediction', "
              "startedAt: Date.now(), input: {prompt: 'gone'}}))")
    page.reload()
    assert _finished(page) == "unknown"
    assert "no longer knows run page-forgotten" in page.eval("document.querySelector('#error').textContent")
    assert page.eval("document.querySelector('#run').disabled") is False
    # Only looked for, never started again.
    assert {c[0] for c in _calls_for(page, default_model, "page-forgotten")} == {"GET"}
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(default_model.url + "/predictions/page-forgotten", timeout=30)
    assert exc.value.code == 404


def test_image_output_is_rendered_as_an_image(open_page, image_model):
    page = open_page(image_model)
    page.set_value("#in-width", "240")
    page.set_value("#in-height", "120")
    page.click("#run")
    assert _finished(page) == "succeeded"
    size = page.wait_for("(() => { const i = document.querySelector('#output img'); "
                         "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null })()")
    assert size == [240, 120]
    assert page.eval("document.querySelector('#output img').src").startswith("data:image/png;base64,")
    assert page.eval("document.querySelector('#output a[download]').getAttribute('download')") == "output.png"
    page.screenshot(os.path.join(ARTIFACTS, "docs-image-model.png"))


def test_list_of_files_and_a_file_input(open_page, browser, tmp_path):
    with _server("page_image.py:Gallery") as server:
        page = open_page(server)
        page.click("#run")
        assert _finished(page) == "succeeded"
        assert page.wait_for("document.querySelectorAll('#output img').length") == 2
        links = page.eval("Array.from(document.querySelectorAll('#output a[download]')).map(a => a.getAttribute('download'))")
        assert links == ["output.0.png", "output.1.png", "output.2.txt"]
    with _server("page_image.py:Picture") as server:
        page = open_page(server)
        png = tmp_path / "in.png"
        png.write_bytes(_tiny_png(5, 3))
        page.set_files("#in-image", [str(png)])
        page.wait_for("document.querySelector('#cli-cmd').textContent.includes('@in.png')")
        page.click("#run")
        assert _finished(page) == "succeeded"
        assert page.eval("document.querySelector('#output pre').textContent") == "5x3"


def test_no_inputs_thirty_inputs_and_training(open_page):
    with _server("page_no_inputs.py") as server:
        page = open_page(server)
        assert page.eval("document.querySelector('.nofields').textContent") == "This model takes no input."
        page.click("#run")
        assert _finished(page) == "succeeded"
        shown = page.eval("document.querySelector('#output pre').textContent")
        assert json.loads(shown) == {"answer": 42, "nested": {"ok": True, "items": [1, 2, 3]}}
        assert "\n" in shown  # pretty-printed
    with _server("page_thirty_inputs.py") as server:
        page = open_page(server)
        names = [f["name"] for f in _field_kinds(page)]
        assert names == [f"field_{i:02d}" for i in range(30)]
        assert sum(1 for f in _field_kinds(page) if f["required"]) == 6
    with _server("http_train.py", mode="train") as server:
        page = open_page(server)
        assert page.eval("document.querySelector('#inputs-heading').textContent") == "Training input"
        assert "/trainings'" in page.eval("document.querySelector('#curl-cmd').textContent")
        assert "python -m minicog train" in page.eval("document.querySelector('#cli-cmd').textContent")
        page.set_value("#in-steps", "3")
        page.click("#run")
        assert _finished(page) == "succeeded"
        assert page.eval("document.querySelector('#output pre').textContent") == "trained 3"


def test_phone_width_dark_mode_and_root_link(open_page, every_input, browser):
    page = open_page(every_input, width=390, height=844, mobile=True, dark=True)
    # Nothing wider than the screen, and the system's dark preference is followed.
    assert page.eval("document.documentElement.scrollWidth <= window.innerWidth")
    bg = page.eval("getComputedStyle(document.body).backgroundColor")
    assert sum(int(x) for x in bg[bg.index("(") + 1:-1].split(",")[:3]) < 150, bg
    assert page.eval("document.querySelector('.layout').getBoundingClientRect().width") <= 390
    page.screenshot(os.path.join(ARTIFACTS, "docs-phone-dark.png"))
    # A browser asking for / gets a link to the page; following it opens the page.
    root = browser.new_page()
    try:
        root.goto(every_input.url + "/")
        assert root.eval("document.querySelector('#docs-link').getAttribute('href')") == "docs"
        root.click("#docs-link")
        root.wait_for("location.pathname === '/docs' && document.querySelectorAll('#fields .field').length > 0")
        assert all(u.startswith(every_input.url + "/") for u in root.requests), root.requests
    finally:
        root.close()


def test_no_request_leaves_the_server(open_page, default_model):
    page = open_page(default_model)
    page.set_value("#in-max_tokens", "5")
    page.click("#run")
    assert _finished(page) == "succeeded"
    assert page.requests, "the network log recorded nothing"
    assert {u.split("/")[2] for u in page.requests if u.startswith("http")} == {default_model.url.split("/")[2]}
    assert not page.failed, page.failed


def _tiny_png(width=2, height=2):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
