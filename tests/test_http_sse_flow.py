"""SSE throughput and the slow-reader policy over real sockets.

A fast reader must get every event of a long stream (the writer sends whatever
the reader is behind in one chunk, so it keeps up with a fast producer), while a
reader that stops reading is cut off with coglet's "lagged" error without holding
up the prediction or the other readers.
"""

import http.client
import json
import os
import socket

import pytest

from http_helpers import running, sse_events, wait_until


def _open(port, method, path, body, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
    return conn, conn.getresponse()


def _report_read(folder, pace, count):
    """Tell the paced model (sse_tokens.py) how many tokens the reader has read."""
    partial = folder / "read.partial"
    partial.write_text(str(count))
    os.replace(partial, pace)  # the model never reads a half-written number


@pytest.mark.slow
def test_fast_reader_gets_all_10000_tokens_in_order(tmp_path):
    # Default lag limit (Settings.stream_subscriber_queue, 1024 events): a reader that keeps
    # reading is never cut off.  The model sends bursts of 1000 tokens at full speed and
    # waits for the reader between bursts (it writes how many it read into pace_file), so
    # the reader is never more than one burst behind: a starved writer thread on a loaded
    # machine cannot turn this into a lag, while every burst still tests the catching up.
    # How fast an unpaced stream goes is measured in benchmarks/, not asserted here.
    pace = tmp_path / "read"
    burst = 1000
    with running("sse_tokens.py") as svc:
        assert burst + 2 <= svc.settings.stream_subscriber_queue  # start + a burst + completed
        conn, resp = _open(svc.port, "POST", "/predictions",
                           {"input": {"n": 10000, "pace_file": str(pace), "burst": burst}})
        try:
            assert resp.status == 200
            events = []
            for e in sse_events(resp, limit=20000):
                if "comment" in e:
                    continue
                events.append(e)
                if e["event"] == "output" and (e["data"]["index"] + 1) % burst == 0:
                    _report_read(tmp_path, pace, e["data"]["index"] + 1)
        finally:
            conn.close()
    errors = [e for e in events if e["event"] == "error"]
    assert not errors, errors[:1]
    outputs = [e["data"] for e in events if e["event"] == "output"]
    assert [o["index"] for o in outputs] == list(range(10000))
    assert [o["chunk"] for o in outputs] == [f"t{i} " for i in range(10000)]
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "completed" and events[-1]["data"]["status"] == "succeeded"


def _dechunk(raw: bytes) -> bytes:
    """The body of a chunked HTTP response (headers included in *raw*)."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    out = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return bytes(out)


@pytest.mark.slow
def test_reader_that_stops_reading_is_dropped_while_prediction_and_others_go_on(tmp_path):
    n, size = 4000, 4000  # ~16 MB of events: far more than the socket buffers hold
    # The model waits for the creator between bursts of 1000 tokens (as in the test above),
    # so only the stalled reader, never the creator, can fall past the 1024-event lag limit.
    pace, burst = tmp_path / "read", 1000
    with running("sse_tokens.py", settings={"read_timeout": 30.0}) as svc:
        conn, resp = _open(svc.port, "PUT", "/predictions/slow-reader",
                           {"input": {"n": n, "size": size, "wait_first": 0.5, "pace_file": str(pace), "burst": burst}})
        assert resp.status == 200
        first = next(sse_events(resp))
        assert first["event"] == "start"

        # The stalled reader: a tiny receive buffer, attaches to the same prediction, reads nothing.
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(30)
        slow.connect(("127.0.0.1", svc.port))
        slow.sendall(b"PUT /predictions/slow-reader HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        pred = svc.find_inflight("slow-reader")
        assert pred is not None
        wait_until(lambda: pred.events.subscriber_count == 2, 10, message="the second reader")

        # The creator reads everything, in order, while the other reader is stalled.
        rest = []
        for e in sse_events(resp, limit=n + 10):
            if "comment" in e:
                continue
            rest.append(e)
            if e["event"] == "output" and (e["data"]["index"] + 1) % burst == 0:
                _report_read(tmp_path, pace, e["data"]["index"] + 1)
        conn.close()
        outputs = [e["data"]["index"] for e in rest if e["event"] == "output"]
        assert outputs == list(range(n))
        assert rest[-1]["event"] == "completed" and rest[-1]["data"]["status"] == "succeeded"
        assert pred.wait(10) and pred.status == "succeeded"

        # Now the stalled reader drains its socket: some events, then the lagged error, then the end.
        got = bytearray()
        while not got.endswith(b"0\r\n\r\n"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            got += chunk
        slow.close()
    text = _dechunk(bytes(got)).decode("utf-8")
    frames = [f for f in text.split("\n\n") if f]
    parsed = []
    for frame in frames:
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        parsed.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    assert parsed[-1][1] == "error", parsed[-1]
    err_id, _, err = parsed[-1]
    assert err["error"] == "SSE stream lagged; events were dropped" and err["skipped"] > 0
    before = [p[0] for p in parsed[:-1]]
    assert before == list(range(1, len(before) + 1)) and err_id == len(before)
    assert len(before) < n  # it really was cut off


def test_fast_prediction_never_ends_before_its_stream_holds_it():
    """A prediction that ends between create() and the SSE writer taking its reference
    used to answer 503 "Prediction stream unavailable" though it had succeeded."""
    import collections
    import threading

    from http_helpers import call

    with running("sse_tokens.py") as svc:
        outcomes = collections.Counter()
        bad = []

        def client():
            for _ in range(60):
                r = call(svc, "POST", "/predictions", {"input": {"n": 0}}, headers={"Accept": "text/event-stream"})
                outcomes[r.status] += 1
                if r.status == 200:
                    if b"event: completed" not in r.body:
                        bad.append(r.body[:200])
                elif r.status != 409:  # a busy slot is a fair answer; anything else is not
                    bad.append((r.status, r.body[:200]))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        assert outcomes[200] > 0 and not bad, (outcomes, bad[:3])


def _raw_stream(port, method, path, body, timeout=30):
    """A raw socket sending one SSE request; its reader, with the response head read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    data = json.dumps(body).encode()
    sock.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
                 % (method.encode(), path.encode(), len(data), data))
    reader = sock.makefile("rb")
    status = reader.readline()
    assert status.startswith(b"HTTP/1.1 200"), status
    for _ in range(100):
        if reader.readline() in (b"\r\n", b""):
            break
    return sock, reader


def _http_chunks(reader):
    """The data of each HTTP chunk of a chunked body, up to the last (empty) one."""
    while True:
        size = int(reader.readline().split(b";")[0], 16)
        data = reader.read(size)
        assert reader.readline() == b"\r\n"
        if not size:
            return
        yield data


def test_first_output_leaves_in_its_own_chunk(tmp_path):
    # A reader attaching to a prediction that already sent 500 tokens gets them in one
    # batch.  The first token must not wait for the other 499 to be encoded: the chunk
    # holding it ends with it, the rest follow in further chunks.  (How soon it arrives
    # is measured in benchmarks/; this checks the framing that makes it early.)
    pace = tmp_path / "read"
    with running("sse_tokens.py") as svc:
        sock = None
        try:
            r = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
            r.request("PUT", "/predictions/early", body=json.dumps(
                {"input": {"n": 600, "pace_file": str(pace), "burst": 500}}).encode(),
                headers={"Content-Type": "application/json", "Prefer": "respond-async"})
            assert r.getresponse().status == 202
            r.close()
            pred = svc.find_inflight("early")
            wait_until(lambda: pred.events.last_id >= 501, 30)  # start + 500 outputs, then it waits
            sock, reader = _raw_stream(svc.port, "PUT", "/predictions/early", {"input": {}})
            chunks = _http_chunks(reader)
            first = next(chunks).decode()
            assert first.count("event: output") == 1, first[:300]
            assert first.rstrip("\n").endswith('data: {"chunk":"t0 ","index":0}'), first[-200:]
            _report_read(tmp_path, pace, 600)  # let the model finish
            rest = "".join(c.decode() for c in chunks)
        finally:
            if sock is not None:
                sock.close()
    tokens = [json.loads(line[6:])["chunk"] for line in (first + rest).splitlines()
              if line.startswith("data: {\"chunk\"")]
    assert tokens == [f"t{i} " for i in range(600)]
    assert '"status":"succeeded"' in rest
