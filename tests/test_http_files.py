"""File outputs over a real server: data: URIs, ordered uploads, upload failure, a big output streamed."""

import base64
import glob
import hashlib
import http.client
import tempfile
import json
import os
import threading
import tracemalloc

import pytest

from http_helpers import call, running, wait_until
from support import Receiver


def test_file_outputs_become_data_uris_and_files_are_released():
    # Without retention the files go once answered (test_retention.py covers retained ones).
    with running("http_files.py", settings={"retention_seconds": 0}) as svc:
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
        with running("file_io.py") as svc:
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
        digest = hashlib.sha256(b"page").hexdigest()
        assert b["output"]["pages_sha"] == [digest, digest] and b["output"]["blob_sha"] == digest


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _spooled_files(directory) -> list:
    return glob.glob(os.path.join(str(directory), "minicog-input-*"))


def test_large_data_uri_inputs_are_decoded_from_the_body_and_reach_every_input_shape(tmp_path, monkeypatch):
    # Above data_uri_spool_chars a data: URI is decoded to a file while the body is
    # parsed: the model gets the very bytes, a str input the very string, and the
    # files are gone once the prediction is answered.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    big = os.urandom(8 * 1024 * 1024 + 1)  # ~11 MB of base64, one padding character
    small = b"small enough to stay a string"
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    # No retention: the record (which owns the files, for echoes) goes once answered.
    with running("files_input_kinds.py", settings={"data_uri_spool_chars": 64 * 1024, "retention_seconds": 0}) as svc:
        uri = _data_uri(big)
        text = _data_uri(big[:300_000], "text/plain")
        body = {"input": {"image": uri, "blob": _data_uri(big[:100_000], "application/octet-stream"),
                          "pages": [_data_uri(small), uri], "text": text}}
        b = call(svc, "POST", "/predictions", body, timeout=120).json()
        assert b["status"] == "succeeded", b
        out = b["output"]
        assert out["image_sha"] == sha(big) and out["image"].endswith("file.png")
        assert out["blob_sha"] == sha(big[:100_000])
        assert out["pages_sha"] == [sha(small), sha(big)]
        assert out["text_sha"] == sha(text.encode()), "a str input must get the exact string back"
        # Removed when the record is released, just after the answer was written.
        wait_until(lambda: not os.path.exists(out["image"]) and not os.path.exists(out["pages"][1]), 10,
                   message="the decoded inputs to be removed")
        wait_until(lambda: not _spooled_files(tmp_path), 10, message="spooled inputs to be removed")


def test_spooled_inputs_are_removed_when_the_request_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    uri = _data_uri(os.urandom(200_000))
    with running("files_input_kinds.py", settings={"data_uri_spool_chars": 64 * 1024}) as svc:
        # 422: another input is invalid; 400: the body is not JSON after the big string.
        r = call(svc, "POST", "/predictions", {"input": {"image": uri, "mask": "/etc/passwd"}})
        assert r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "input", "mask"]
        raw = json.dumps({"input": {"image": uri}}).encode()[:-1]
        r = call(svc, "POST", "/predictions", raw=raw, headers={"Content-Type": "application/json"})
        # The error names the place in the body the client sent (the original is parsed).
        assert r.status == 400 and f"column {len(raw) + 1}".encode() in r.body, r.body
        assert not _spooled_files(tmp_path)


def test_non_canonical_or_misplaced_data_uris_are_left_to_the_json_parser(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    data = os.urandom(150_000)
    canonical = _data_uri(data)
    wrapped = canonical[:70_000] + "\n" + canonical[70_000:]  # a line break inside the base64
    urlsafe = "data:image/png;base64," + base64.urlsafe_b64encode(data).decode()
    with running("files_input_kinds.py", settings={"data_uri_spool_chars": 64 * 1024}) as svc:
        for uri in (wrapped, urlsafe):
            b = call(svc, "POST", "/predictions", {"input": {"image": uri}}).json()
            assert b["status"] == "succeeded" and b["output"]["image_sha"] == hashlib.sha256(data).hexdigest()
        # The same string as an id (not an input): the body is parsed as it is.
        r = call(svc, "POST", "/predictions", {"input": {}, "context": {"k": canonical}})
        assert r.status == 200 and r.json()["status"] == "succeeded"
    assert not _spooled_files(tmp_path)
