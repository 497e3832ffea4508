"""File outputs over a real server: data: URIs, ordered uploads, upload failure, a big output streamed."""

import base64
import http.client
import json
import os
import threading
import tracemalloc

import pytest

from http_helpers import call, running, wait_until
from support import Receiver


def test_file_outputs_become_data_uris_and_files_are_released():
    with running("http_files.py") as svc:
        b = call(svc, "POST", "/predictions", {"input": {"count": 2}}).json()
        assert b["status"] == "succeeded"
        assert b["output"] == ["data:text/plain;base64," + base64.b64encode(f"file {i}".encode()).decode() for i in range(2)]
        wait_until(lambda: not svc.engine.open_runs(), 5, message="records to release their files")
        assert not svc.engine.open_runs(), "per-prediction folders must be removed once answered"


def test_uploads_keep_order_and_follow_location():
    gate = threading.Event()

    def responder(rec):
        if rec.path.endswith("o0.txt"):
            gate.wait(5)  # the first upload finishes last
        return 201, {"Location": f"http://cdn.example{rec.path}?signature=abc"}, b""

    with Receiver(responder) as rx:
        with running("http_files.py", upload_url=rx.url + "/uploads") as svc:
            result = {}
            t = threading.Thread(target=lambda: result.update(r=call(svc, "POST", "/predictions", {"input": {"count": 4}})))
            t.start()
            rx.wait_for(lambda rs: len(rs) >= 3)
            gate.set()
            t.join(15)
            b = result["r"].json()
            assert b["status"] == "succeeded"
            assert b["output"] == [f"http://cdn.example/uploads/o{i}.txt" for i in range(4)]
            puts = rx.requests
            assert all(r.method == "PUT" for r in puts)
            assert {r.headers["x-prediction-id"] for r in puts} == {b["id"]}
            assert {r.headers["content-type"] for r in puts} == {"text/plain"}
            assert sorted(r.body for r in puts) == [f"file {i}".encode() for i in range(4)]


def test_upload_failure_fails_the_prediction():
    with Receiver(lambda rec: (500, {}, b"")) as rx:
        with running("http_files.py", upload_url=rx.url) as svc:
            b = call(svc, "POST", "/predictions", {"input": {"count": 1}}).json()
            assert b["status"] == "failed"
            assert b["error"] == "Failed to upload output: upload returned status 500 Internal Server Error"


@pytest.mark.slow
def test_big_output_is_streamed_not_copied():
    size = 40 * 1024 * 1024
    with running("http_files.py") as svc:
        tracemalloc.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
            conn.request("POST", "/predictions", body=json.dumps({"input": {"size": size}}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            length = int(resp.getheader("Content-Length"))
            # Read and check the body in pieces, so the test itself holds no big copy either.
            head = resp.read(200)
            total = len(head)
            while True:
                piece = resp.read(1 << 20)
                if not piece:
                    break
                total += len(piece)
                tail = piece[-100:]
            conn.close()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert total == length
    assert head.startswith(b'{"id":"pred_') and b'"output":["data:application/octet-stream;base64,' in head
    assert tail.endswith(b'"}') or b'"completed_at"' in tail
    assert length > size * 4 // 3
    # A materialised data: URI alone would be 53 MB; streaming keeps the server's Python heap small.
    assert peak < 16 * 1024 * 1024, f"peak Python allocations {peak / 1e6:.1f} MB"


def test_url_and_data_inputs_are_fetched_then_removed_and_a_failed_fetch_names_the_input():
    def responder(rec):
        if rec.path == "/pics/hello.txt":
            return 200, {"Content-Type": "text/plain"}, b"hello over http"
        return 404, {}, b"no such file"

    with Receiver(responder) as rx:
        with running("w_files.py") as svc:
            b = call(svc, "POST", "/predictions", {"input": {"mode": "input", "image": rx.url + "/pics/hello.txt"}}).json()
            assert b["status"] == "succeeded", b
            assert b["output"]["data"] == "hello over http" and b["output"]["exists"] is True
            assert b["output"]["path"].endswith("hello.txt")
            assert not os.path.exists(b["output"]["path"]), "the downloaded input must be removed after the prediction"
            assert [r.method for r in rx.requests] == ["GET"]

            data = "data:text/plain;base64," + base64.b64encode(b"inline bytes").decode()
            b = call(svc, "POST", "/predictions", {"input": {"mode": "input", "image": data}}).json()
            assert b["status"] == "succeeded" and b["output"]["data"] == "inline bytes"
            assert not os.path.exists(b["output"]["path"])

            b = call(svc, "POST", "/predictions", {"input": {"mode": "input", "image": rx.url + "/missing.png"}}).json()
            assert b["status"] == "failed"
            assert b["error"].startswith("Input validation error: image: ") and "404" in b["error"], b["error"]
            assert call(svc, "GET", "/health-check").json()["status"] == "READY"


def test_local_paths_and_other_url_schemes_are_refused_for_every_file_input():
    # Only http(s):// and data: URLs are file inputs: file:// or a bare path would make
    # the model read the server's own files.  A 422 naming the input, before any slot.
    ok = "data:text/plain;base64," + base64.b64encode(b"page").decode()
    scheme = "'file' is not a valid URL scheme. 'data', 'http', or 'https' is supported."
    bare = "'/etc/passwd' is not a URL. 'data', 'http', or 'https' is supported."
    with running("files_input_kinds.py") as svc:
        cases = [
            ({"image": "file:///etc/passwd"}, "image", scheme),
            ({"image": "/etc/passwd"}, "image", bare),
            ({"blob": "FILE:///etc/passwd"}, "blob", scheme),
            ({"mask": "/etc/passwd"}, "mask", bare),
            ({"pages": [ok, "/etc/passwd"]}, "pages/1", bare),
            ({"image": "ftp://example.com/x.png"}, "image", scheme.replace("'file'", "'ftp'")),
        ]
        for body, loc, msg in cases:
            r = call(svc, "POST", "/predictions", {"input": body})
            assert r.status == 422, (body, r.status, r.body)
            assert r.json()["detail"] == [{"loc": ["body", "input", loc], "msg": msg, "type": "value_error"}], body
        b = call(svc, "POST", "/predictions", {"input": {"pages": [ok, ok], "blob": ok, "image": ok.upper()[:5] + ok[5:]}}).json()
        assert b["status"] == "succeeded", b
        assert b["output"]["pages"] == ["page", "page"] and b["output"]["blob"] == "page"
