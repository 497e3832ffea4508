"""SSE over a real server: events with ids, reattach with Last-Event-ID, keep-alive, lag, disconnect cancel."""

import http.client
import json
import socket

import pytest

from http_helpers import call, running, sse_events, wait_until
from support import Receiver


def open_stream(port, method, path, body, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, body=json.dumps(body).encode(),
                 headers={"Content-Type": "application/json", "Accept": "text/event-stream", **(headers or {})})
    return conn, conn.getresponse()


def events_to_first_output(resp):
    """The events read up to and including the first ``output`` (keep-alive comments left out)."""
    first = []
    for e in sse_events(resp):
        if "comment" in e:
            continue
        first.append(e)
        if e["event"] == "output":
            break
    return first


@pytest.fixture(scope="module")
def streamer():
    with running("http_stream.py", settings={"sse_keepalive_interval": 0.2, "stream_history_capacity": 1024}) as svc:
        yield svc


def test_sse_events_in_order_with_ids(streamer):
    conn, resp = open_stream(streamer.port, "POST", "/predictions", {"input": {"n": 3}})
    try:
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "text/event-stream"
        assert resp.getheader("Cache-Control") == "no-cache"
        events = [e for e in sse_events(resp) if "comment" not in e]
    finally:
        conn.close()
    names = [e["event"] for e in events]
    assert names[0] == "start" and names[-1] == "completed"
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert events[0]["data"]["status"] == "processing"
    outputs = [e["data"] for e in events if e["event"] == "output"]
    assert outputs == [{"chunk": f"tok{i}", "index": i} for i in range(3)]
    logs = [e["data"] for e in events if e["event"] == "log"]
    assert logs[0] == {"data": "tick 0\n", "source": "stdout"}
    metrics = [e["data"] for e in events if e["event"] == "metric"]
    assert metrics[0] == {"mode": "increment", "name": "count", "value": 1}
    final = events[-1]["data"]
    assert final["status"] == "succeeded" and final["output"] == ["tok0", "tok1", "tok2"]
    assert final["metrics"]["count"] == 3 and "predict_time" in final["metrics"]


def test_sse_failed_prediction_completes_with_error(streamer):
    conn, resp = open_stream(streamer.port, "POST", "/predictions", {"input": {"n": 3, "fail_at": 1}})
    try:
        events = [e for e in sse_events(resp) if "comment" not in e]
    finally:
        conn.close()
    final = events[-1]
    assert final["event"] == "completed" and final["data"]["status"] == "failed"
    assert "stream broke" in final["data"]["error"] and "tick 0" in final["data"]["logs"]


def test_put_reattach_with_last_event_id_resumes(streamer):
    r = call(streamer, "PUT", "/predictions/re-1", {"input": {"n": 4, "gap": 0.3}}, headers={"Prefer": "respond-async"})
    assert r.status == 202
    conn, resp = open_stream(streamer.port, "PUT", "/predictions/re-1", {"input": {}})
    first = events_to_first_output(resp)
    conn.close()  # a reader of an async prediction leaving does not cancel it
    last = first[-1]["id"]
    conn, resp = open_stream(streamer.port, "PUT", "/predictions/re-1", {"input": {}}, headers={"Last-Event-ID": last})
    try:
        rest = [e for e in sse_events(resp) if "comment" not in e]
    finally:
        conn.close()
    ids = [int(e["id"]) for e in first + rest]
    assert ids == list(range(1, len(ids) + 1)), "resume must continue right after Last-Event-ID, no gap, no repeat"
    assert rest[-1]["event"] == "completed" and rest[-1]["data"]["status"] == "succeeded"


def test_keepalive_comment_when_quiet(streamer):
    conn, resp = open_stream(streamer.port, "POST", "/predictions", {"input": {"n": 1, "wait_first": 0.8}})
    try:
        items = list(sse_events(resp))
    finally:
        conn.close()
    assert {"comment": "keep-alive"} in items
    assert items[-1]["event"] == "completed"


def test_creator_disconnect_cancels(streamer):
    conn, resp = open_stream(streamer.port, "PUT", "/predictions/dc-1", {"input": {"n": 1000, "gap": 0.05}})
    for e in sse_events(resp):
        if e.get("event") == "output":
            break
    pred = streamer.find_inflight("dc-1")
    assert pred is not None
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert pred.wait(10) and pred.status == "canceled"


def test_reader_of_an_async_prediction_may_leave_without_canceling_it(streamer):
    # Cog: only a prediction created over SSE is canceled when its readers leave; one created
    # with Prefer: respond-async keeps running when a stream attached later by PUT goes away.
    r = call(streamer, "PUT", "/predictions/dc-async", {"input": {"n": 6, "gap": 0.1}}, headers={"Prefer": "respond-async"})
    assert r.status == 202
    conn, resp = open_stream(streamer.port, "PUT", "/predictions/dc-async", {})
    for e in sse_events(resp):
        if e.get("event") == "output":
            break
    pred = streamer.find_inflight("dc-async")
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert pred is not None and pred.wait(10) and pred.status == "succeeded"


def get_stream(port, path, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
    return conn, conn.getresponse()


def test_get_attaches_to_a_stream_and_never_starts_one(streamer):
    # What the /docs page uses: a GET follows a prediction's events (minicog's addition; coglet
    # has no GET of a prediction) and, unlike a PUT, cannot run the model for an unknown id.
    conn, resp = get_stream(streamer.port, "/predictions/get-nobody")
    try:
        assert resp.status == 404 and "get-nobody" in json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert streamer.find("get-nobody") is None
    r = call(streamer, "PUT", "/predictions/get-1", {"input": {"n": 6, "gap": 0.1}}, headers={"Prefer": "respond-async"})
    assert r.status == 202
    conn, resp = get_stream(streamer.port, "/predictions/get-1")
    try:
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        first = events_to_first_output(resp)
    finally:
        conn.sock.shutdown(socket.SHUT_RDWR)  # the reader leaves (a page reload): the run goes on
        conn.close()
    assert first[0]["event"] == "start" and first[-1]["data"]["chunk"] == "tok0"
    pred = streamer.find("get-1")
    assert pred is not None and pred.wait(10) and pred.status == "succeeded"
    # After the end (the record is retained), a GET with Last-Event-ID gets exactly the rest.
    conn, resp = get_stream(streamer.port, "/predictions/get-1", {"Last-Event-ID": first[-1]["id"]})
    try:
        rest = [e for e in sse_events(resp) if "comment" not in e]
    finally:
        conn.close()
    ids = [int(e["id"]) for e in first + rest]
    assert ids == list(range(1, len(ids) + 1))
    assert rest[-1]["event"] == "completed" and rest[-1]["data"]["output"] == [f"tok{i}" for i in range(6)]


def test_get_stream_of_a_model_that_does_not_stream_is_406():
    with running("http_echo.py") as svc:
        r = call(svc, "PUT", "/predictions/plain-1", {"input": {"text": "x"}})
        assert r.status == 200
        for path in ("/predictions/plain-1", "/trainings/plain-1", "/predictions/unknown"):
            r = call(svc, "GET", path, headers={"Accept": "text/event-stream"})
            assert r.status == 406 and "streaming" in r.json()["error"], path
        assert call(svc, "GET", "/predictions/plain-1").json()["output"] == "x"  # the JSON state stays


def test_sse_with_webhook_too(streamer):
    with Receiver() as rx:
        conn, resp = open_stream(streamer.port, "POST", "/predictions", {"input": {"n": 2}, "webhook": rx.url})
        try:
            events = [e for e in sse_events(resp) if "comment" not in e]
        finally:
            conn.close()
        done = rx.wait_for(lambda rs: [r for r in rs if r.json()["status"] == "succeeded"])
        assert done[0].json()["output"] == events[-1]["data"]["output"]


def test_too_many_subscribers_is_429():
    with running("http_stream.py", settings={"max_stream_subscribers": 1}) as svc:
        conn, resp = open_stream(svc.port, "PUT", "/predictions/many", {"input": {"n": 200, "gap": 0.05}})
        try:
            next(sse_events(resp))
            r = call(svc, "PUT", "/predictions/many", {"input": {}}, headers={"Accept": "text/event-stream"})
            assert r.status == 429 and r.json() == {"error": "Too many stream subscribers"}
        finally:
            call(svc, "POST", "/predictions/many/cancel")
            conn.close()


def test_replay_truncated_when_history_too_small():
    with running("http_stream.py", settings={"stream_history_capacity": 2}) as svc:
        r = call(svc, "PUT", "/predictions/tr", {"input": {"n": 400, "gap": 0.05}}, headers={"Prefer": "respond-async"})
        assert r.status == 202
        pred = svc.find_inflight("tr")
        wait_until(lambda: pred.events.last_id >= 10, 10)
        conn, resp = open_stream(svc.port, "PUT", "/predictions/tr", {"input": {}})
        try:
            events = list(sse_events(resp))
        finally:
            conn.close()
        assert len(events) == 1 and events[0]["event"] == "error"
        assert events[0]["data"]["error"] == "SSE stream replay truncated; events were dropped"
        assert events[0]["data"]["skipped"] >= 8
        assert not pred.is_terminal  # a reader that is turned away does not cancel
        call(svc, "POST", "/predictions/tr/cancel")


def test_creator_sees_start_and_every_token_without_history():
    # With no replay history a reader sees only events published after it subscribed.
    # The request that creates a prediction subscribes before the run is submitted, so
    # it gets the start event (published while submitting) and the first tokens of a
    # model that starts at once, never a stream with its head cut off.
    with running("http_stream.py", settings={"stream_history_capacity": 0}) as svc:
        for attempt in range(3):
            conn, resp = open_stream(svc.port, "POST", "/predictions", {"input": {"n": 3}})
            try:
                assert resp.status == 200
                events = [e for e in sse_events(resp) if "comment" not in e]
            finally:
                conn.close()
            assert events[0]["event"] == "start" and events[0]["id"] == "1", events[:3]
            assert [e["data"]["chunk"] for e in events if e["event"] == "output"] == ["tok0", "tok1", "tok2"]
            assert events[-1]["event"] == "completed"


def test_creator_leaving_before_the_first_token_cancels_and_frees_the_slot(streamer):
    # Until its first token the creating request reads the worker's messages itself;
    # leaving before then must still cancel the run and give the slot back.
    conn, resp = open_stream(streamer.port, "PUT", "/predictions/dc-early", {"input": {"n": 2, "wait_first": 30}})
    assert next(e for e in sse_events(resp) if "comment" not in e)["event"] == "start"
    pred = streamer.find_inflight("dc-early")
    assert pred is not None
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    assert pred.wait(20) and pred.status == "canceled"
    conn, resp = open_stream(streamer.port, "POST", "/predictions", {"input": {"n": 2}})
    try:
        events = [e for e in sse_events(resp) if "comment" not in e]
    finally:
        conn.close()
    assert events[-1]["event"] == "completed" and events[-1]["data"]["output"] == ["tok0", "tok1"]


def test_a_sync_prediction_in_flight_can_be_followed_as_a_stream(streamer):
    """A plain sync PUT (its record built while the worker already runs it) still streams
    its events to a reader that GETs it meanwhile, as any other prediction does."""
    import threading

    answer: list = []
    sync = threading.Thread(target=lambda: answer.append(
        call(streamer, "PUT", "/predictions/sync-followed", {"input": {"n": 5, "gap": 0.1}})))
    sync.start()
    try:
        assert wait_until(lambda: streamer.find("sync-followed") is not None, 10)
        conn, resp = get_stream(streamer.port, "/predictions/sync-followed")
        try:
            assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
            events = [e for e in sse_events(resp) if "comment" not in e]
        finally:
            conn.close()
    finally:
        sync.join(20)
    assert events[0]["event"] == "start" and events[-1]["event"] == "completed"
    assert [e["data"]["chunk"] for e in events if e["event"] == "output"] == [f"tok{i}" for i in range(5)]
    assert answer and answer[0].status == 200 and answer[0].json()["output"] == [f"tok{i}" for i in range(5)]
