"""The request head parser (minicog's own, instead of email.parser): raw bytes over a real socket."""

import json

import pytest

from http_helpers import raw_exchange, running, wait_until
from minicog.server.http import Headers


@pytest.fixture(scope="module")
def echo():
    with running("http_echo.py", settings={"read_timeout": 1.0}) as svc:
        yield svc


def _answer(raw: bytes) -> tuple[bytes, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, json.loads(body) if body.strip() else {}


def test_headers_map_is_case_insensitive_and_keeps_repeats():
    h = Headers()
    h.add("Prefer", "respond-async")
    h.add("prefer", "wait=5")
    h.add("Content-Type", "application/json")
    assert h.get("PREFER") == "respond-async" and h.get_all("Prefer") == ["respond-async", "wait=5"]
    assert h["content-type"] == "application/json" and "Content-Type" in h and "X" not in h
    assert h.get("missing") is None and h.get_all("missing") is None and h["missing"] is None
    assert h.keys() == ["Prefer", "prefer", "Content-Type"] and len(h) == 3


def test_folded_and_repeated_headers_reach_the_handler(echo):
    body = b'{"input": {"text": "fold"}}'
    req = (b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type:\r\n application/json\r\n"
           b"Prefer: wait=1\r\nPrefer: respond-async\r\nConnection: close\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    head, doc = _answer(raw_exchange(echo.port, req))
    assert head.startswith(b"HTTP/1.1 202") and doc["status"] == "starting"
    wait_until(lambda: echo.orchestrator.free_slots == 1 and not echo.orchestrator.in_flight(), 10,
               message="the async prediction to finish")


def test_header_line_without_colon_is_400_json(echo):
    head, doc = _answer(raw_exchange(echo.port, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 400") and "Bad header line" in doc["error"]


def test_space_before_colon_is_400(echo):
    head, _ = _answer(raw_exchange(echo.port, b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("line,status,text", [
    (b"GET / HTTP/2.0", b"505", "Invalid HTTP version"),
    (b"GET / HTTX/1.1", b"400", "Bad request version"),
    (b"GET / HTTP/1.x", b"400", "Bad request version"),
    (b"POST /predictions", b"400", "HTTP/0.9 requests are not supported"),
    (b"GET /", b"400", "HTTP/0.9 requests are not supported"),
    (b"GET / HTTP/0.9", b"505", "Invalid HTTP version"),
    (b"GET / HTTP/0.8", b"505", "Invalid HTTP version"),
    (b"GET / extra HTTP/1.1", b"400", "Bad request syntax"),
])
def test_bad_request_lines(echo, line, status, text):
    head, doc = _answer(raw_exchange(echo.port, line + b"\r\nHost: x\r\n\r\n"))
    assert head.split(b" ")[1] == status and text in doc["error"]


def test_too_many_header_lines_is_431(echo):
    many = b"".join(b"X-%d: y\r\n" % i for i in range(101))
    head, _ = _answer(raw_exchange(echo.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"))
    assert head.startswith(b"HTTP/1.1 431")


def test_expect_100_continue_gets_interim_answer(echo):
    body = b'{"input": {"text": "e"}}'
    req = (b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
           b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    raw = raw_exchange(echo.port, req)
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
    assert json.loads(raw.partition(b"\r\n\r\n")[2].partition(b"\r\n\r\n")[2])["output"] == "e"


def test_double_slash_path_is_not_a_network_path(echo):
    head, doc = _answer(raw_exchange(echo.port, b"GET //health-check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    assert head.startswith(b"HTTP/1.1 200") and doc["status"] == "READY"


# A head that arrives whole with CRLF line ends is split in one step (RequestReader.head_lines);
# any other head is read line by line.  Both paths must read the same request.
@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "bare-lf"])
def test_a_head_is_read_alike_with_crlf_or_bare_lf(echo, eol):
    body = b'{"input": {"text": "eol"}}'
    lines = [b"POST /predictions HTTP/1.1", b"Host: x", b"Content-Type: application/json",
             b"Connection: close", b"Content-Length: " + str(len(body)).encode()]
    head, doc = _answer(raw_exchange(echo.port, eol.join(lines) + eol + eol + body))
    assert head.startswith(b"HTTP/1.1 200") and doc["output"] == "eol"


def test_a_head_split_across_reads_is_read_line_by_line(echo):
    import socket
    body = b'{"input": {"text": "split"}}'
    first = b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
    rest = (b"ication/json\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", echo.port), timeout=10) as s:
        s.sendall(first)
        s.sendall(rest)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, doc = _answer(data)
    assert head.startswith(b"HTTP/1.1 200") and doc["output"] == "split"
