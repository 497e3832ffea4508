"""Tests for minicog.files: data: URIs, Cog's filenames, fetch and upload over real loopback sockets."""

from __future__ import annotations

import base64
import http.server
import os
import socket
import threading

import pytest

from minicog import files
from minicog.errors import InputFetchError, OutputError
from support import Receiver


# --- mime types and data: URIs ----------------------------------------------------------


@pytest.mark.parametrize("name,mime", [
    ("a.txt", "text/plain"), ("a.png", "image/png"), ("a.json", "application/json"),
    ("x/y/photo.JPG", "image/jpeg"), ("a.webp", "image/webp"), ("noext", "application/octet-stream"),
    ("weird.zzqq", "application/octet-stream"),
])
def test_guess_mime(name, mime):
    assert files.guess_mime(name) == mime


def test_data_uri_round_trip():
    uri = files.data_uri(b"hello file", "image/png")
    assert uri == "data:image/png;base64,aGVsbG8gZmlsZQ=="
    assert files.parse_data_uri(uri) == ("image/png", b"hello file")
    assert files.data_uri(b"x").startswith("data:application/octet-stream;base64,")


def test_data_uri_from_path_guesses_mime_and_streams(tmp_path):
    p = tmp_path / "out.json"
    payload = os.urandom(100_000)
    p.write_bytes(payload)
    uri = files.data_uri_from_path(p)
    assert uri.startswith("data:application/json;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == payload
    assert files.data_uri_from_path(str(p), "text/plain").startswith("data:text/plain;base64,")
    # pieces: header, then bounded base64 blocks that concatenate to the same URI
    pieces = list(files.iter_data_uri_from_path(p, chunk=1000))
    assert pieces[0] == "data:application/json;base64,"
    assert len(pieces) > 50 and max(len(x) for x in pieces[1:]) <= 1336
    assert "".join(pieces) == uri
    # a chunk size that is not a multiple of 3 still gives a valid URI (no inner padding)
    assert "".join(files.iter_data_uri_from_path(p, chunk=1001)) == uri


def test_data_uri_of_empty_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    assert files.data_uri_from_path(p) == "data:text/plain;base64,"


@pytest.mark.parametrize("uri,expected", [
    ("data:text/plain;base64,aGk=", ("text/plain", b"hi")),
    ("data:text/plain;base64,aGk", ("text/plain", b"hi")),                 # no padding
    ("data:;base64,aGk=", ("text/plain", b"hi")),                          # RFC 2397 default type
    ("data:,a%20b", ("text/plain", b"a b")),                               # percent-encoded
    ("data:text/plain;charset=utf-8,x", ("text/plain;charset=utf-8", b"x")),
    ("data:application/octet-stream;base64,-_8=", ("application/octet-stream", b"\xfb\xff")),  # url-safe
    ("data:image/png;base64,aGVs\nbG8=", ("image/png", b"hello")),         # line breaks
])
def test_parse_data_uri(uri, expected):
    assert files.parse_data_uri(uri) == expected


@pytest.mark.parametrize("bad", ["http://x", "data:image/png;base64", "data:image/png;base64,@@@"])
def test_parse_data_uri_rejects_garbage(bad):
    with pytest.raises(InputFetchError):
        files.parse_data_uri(bad)


# --- Cog's get_filename ------------------------------------------------------------------


def test_filename_from_url():
    assert files.filename_from_url("data:image/png;base64,AAAA") == "file.png"
    assert files.filename_from_url("data:application/x-unknown-thing;base64,AAAA") == "file"
    assert files.filename_from_url("http://h/dir/pic.png") == "pic.png"
    assert files.filename_from_url("https://h/a/my%20pic+1.png?sig=abc#frag") == "my pic 1.png"
    assert files.filename_from_url("http://h/a%2Fb.txt") == "a_b.txt"       # decoded / replaced
    assert files.filename_from_url("http://h/a%00b.txt") == "a_b.txt"       # NUL replaced
    assert files.filename_from_url("http://h/") == ""


def test_long_filenames_are_cut_to_200_utf8_bytes_keeping_the_extension():
    name = files.filename_from_url("http://h/" + "é" * 300 + ".png")
    assert name.endswith("~.png")
    assert len(name.encode("utf-8")) <= 200
    assert name.startswith("é" * 90)
    short = "a" * 200 + ".png"  # 204 bytes: cut
    assert len(files.filename_from_url("http://h/" + short).encode()) == 200
    exactly = "b" * 196 + ".png"  # 200 bytes: kept
    assert files.filename_from_url("http://h/" + exactly) == exactly


# --- fetch -------------------------------------------------------------------------------


def test_fetch_http_streams_to_a_file_named_after_the_url(tmp_path):
    body = os.urandom(1_000_000)
    with Receiver(lambda r: (200, {"Content-Type": "image/png"}, body)) as rx:
        path = files.fetch(rx.url + "/img/pic%20one.png?x=1", str(tmp_path), timeout=5, max_bytes=10_000_000, user_agent="minicog-test/1")
        seen = rx.wait_for(lambda reqs: reqs and reqs[0])
    assert os.path.dirname(path) == str(tmp_path)
    assert os.path.basename(path).endswith("pic one.png")
    assert os.path.basename(path) != "pic one.png"  # a fresh temporary name, not a collision risk
    with open(path, "rb") as f:
        assert f.read() == body
    assert seen.method == "GET" and seen.headers["user-agent"] == "minicog-test/1"


def test_fetch_data_uri(tmp_path):
    path = files.fetch("data:image/png;base64,aGVsbG8=", str(tmp_path), timeout=5, max_bytes=100)
    assert path.endswith("file.png") and os.path.dirname(path) == str(tmp_path)
    with open(path, "rb") as f:
        assert f.read() == b"hello"
    with pytest.raises(InputFetchError, match="more than the limit of 3 bytes"):
        files.fetch("data:image/png;base64,aGVsbG8=", str(tmp_path), timeout=5, max_bytes=3)
    assert os.listdir(tmp_path) == [os.path.basename(path)]


def test_fetch_http_error_reads_like_requests(tmp_path):
    with Receiver(lambda r: (404, {}, b"nope")) as rx:
        url = rx.url + "/missing.png"
        with pytest.raises(InputFetchError) as info:
            files.fetch(url, str(tmp_path), timeout=5, max_bytes=100)
    assert str(info.value) == f"404 Client Error: Not Found for url: {url}"
    with Receiver(lambda r: (503, {}, b"")) as rx:
        with pytest.raises(InputFetchError, match=r"^503 Server Error: Service Unavailable for url: "):
            files.fetch(rx.url + "/x", str(tmp_path), timeout=5, max_bytes=100)
    assert os.listdir(tmp_path) == []


def test_fetch_declared_size_over_limit_is_refused_before_download(tmp_path):
    with Receiver(lambda r: (200, {}, b"x" * 5000)) as rx:
        with pytest.raises(InputFetchError, match="more than the limit of 1000 bytes"):
            files.fetch(rx.url + "/big.bin", str(tmp_path), timeout=5, max_bytes=1000)
    assert os.listdir(tmp_path) == []


class _Undeclared(http.server.BaseHTTPRequestHandler):
    """Answers with a close-delimited body of unknown length (no Content-Length)."""

    protocol_version = "HTTP/1.0"
    size = 0

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        left = self.size
        try:
            while left > 0:
                n = min(left, 65536)
                self.wfile.write(b"y" * n)
                left -= n
        except OSError:
            pass  # the client hung up after its limit: expected


@pytest.fixture
def undeclared_server():
    servers = []

    def start(size):
        handler = type("H", (_Undeclared,), {"size": size})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_fetch_counts_bytes_when_size_is_not_declared(tmp_path, undeclared_server):
    url = undeclared_server(3_000_000)
    with pytest.raises(InputFetchError, match="larger than the limit of 1000000 bytes"):
        files.fetch(url + "/stream.bin", str(tmp_path), timeout=5, max_bytes=1_000_000)
    assert os.listdir(tmp_path) == []  # the partial file is removed
    url = undeclared_server(200_000)
    path = files.fetch(url + "/stream.bin", str(tmp_path), timeout=5, max_bytes=1_000_000)
    assert os.path.getsize(path) == 200_000


def test_fetch_follows_redirects_but_only_to_http(tmp_path):
    def responder(r):
        if r.path == "/old.txt":
            return 302, {"Location": "/new.txt"}, b""
        if r.path == "/evil.txt":
            return 302, {"Location": "file:///etc/passwd"}, b""
        return 200, {}, b"moved"

    with Receiver(responder) as rx:
        path = files.fetch(rx.url + "/old.txt", str(tmp_path), timeout=5, max_bytes=100)
        with open(path, "rb") as f:
            assert f.read() == b"moved"
        assert path.endswith("old.txt")
        with pytest.raises(InputFetchError):
            files.fetch(rx.url + "/evil.txt", str(tmp_path), timeout=5, max_bytes=100)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "/etc/hostname"])
def test_fetch_rejects_other_schemes(tmp_path, url):
    with pytest.raises(InputFetchError, match="is not a valid URL scheme. 'data', 'http', or 'https' is supported."):
        files.fetch(url, str(tmp_path), timeout=5, max_bytes=100)


def test_fetch_connection_refused(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(InputFetchError, match=f"failed to fetch http://127.0.0.1:{port}/x"):
        files.fetch(f"http://127.0.0.1:{port}/x", str(tmp_path), timeout=5, max_bytes=100)


def test_fetch_times_out_on_a_silent_server(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP connection, never answers
    try:
        with pytest.raises(InputFetchError, match="timed out"):
            files.fetch(f"http://127.0.0.1:{listener.getsockname()[1]}/x", str(tmp_path), timeout=0.3, max_bytes=100)
    finally:
        listener.close()


# --- upload ------------------------------------------------------------------------------


def test_upload_puts_the_file_and_returns_the_url_without_query(tmp_path):
    p = tmp_path / "out put.png"
    payload = os.urandom(300_000)
    p.write_bytes(payload)
    with Receiver(lambda r: (200, {}, b"")) as rx:
        result = files.upload(p, rx.url + "/uploads", prediction_id="pid-1", timeout=5)
        req = rx.wait_for(lambda reqs: reqs and reqs[0])
    assert req.method == "PUT"
    assert req.path == "/uploads/out%20put.png"
    assert req.body == payload
    assert req.headers["content-type"] == "image/png"
    assert req.headers["content-length"] == str(len(payload))
    assert req.headers["x-prediction-id"] == "pid-1"
    assert "user-agent" not in req.headers
    assert result == rx.url + "/uploads/out%20put.png"


def test_upload_of_a_prediction_with_a_non_ascii_id_sends_it_percent_encoded(tmp_path):
    # Header values must be latin-1 on the wire; an id such as "日本" (allowed by Cog) must not
    # fail the upload - it is sent percent-encoded, printable ASCII ids unchanged.
    p = tmp_path / "a.txt"
    p.write_text("x")
    with Receiver(lambda r: (200, {}, b"")) as rx:
        files.upload(p, rx.url, prediction_id="日本 1", timeout=5)
        files.upload(p, rx.url, prediction_id="pred-ok_1~", timeout=5)
        first, second = rx.wait_for(lambda reqs: len(reqs) == 2 and reqs)
    assert first.headers["x-prediction-id"] == "%E6%97%A5%E6%9C%AC%201"
    assert second.headers["x-prediction-id"] == "pred-ok_1~"


def test_upload_prefers_location_and_strips_its_query(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("hi")
    with Receiver(lambda r: (201, {"Location": "http://files.example/out.png?sig=abc"}, b"")) as rx:
        assert files.upload(p, rx.url + "/", prediction_id="x", mime="text/x-custom", timeout=5) == "http://files.example/out.png"
        assert rx.requests[0].path == "/a.txt"  # trailing slash not doubled
        assert rx.requests[0].headers["content-type"] == "text/x-custom"


def test_upload_follows_307_resending_the_body(tmp_path):
    p = tmp_path / "b.bin"
    p.write_bytes(b"abc")

    def responder(r):
        if r.path.startswith("/first/"):
            return 307, {"Location": "/second/b.bin?token=1"}, b""
        return 200, {}, b""

    with Receiver(responder) as rx:
        result = files.upload(p, rx.url + "/first", prediction_id="x", timeout=5)
        assert [r.path for r in rx.requests] == ["/first/b.bin", "/second/b.bin?token=1"]
        assert rx.requests[1].body == b"abc"
    assert result == rx.url + "/second/b.bin"


def test_upload_error_status(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("x")
    with Receiver(lambda r: (500, {}, b"boom")) as rx:
        with pytest.raises(OutputError) as info:
            files.upload(p, rx.url, prediction_id="x", timeout=5)
    assert str(info.value) == "Failed to upload output: upload returned status 500 Internal Server Error"


def test_upload_connection_error(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("x")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(OutputError, match=r"^Failed to upload output: upload request failed: .+"):
        files.upload(p, f"http://127.0.0.1:{port}/", prediction_id="x", timeout=5)


def test_is_url():
    assert files.is_url("http://x") and files.is_url("https://x") and files.is_url("data:,x")
    assert not files.is_url("/etc/hostname") and not files.is_url(3) and not files.is_url("ftp://x")
