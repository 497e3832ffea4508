"""Routes, parsing, errors, modes and connection handling of a real server (real worker subprocess)."""

import datetime
import http.client
import json
import socket
import threading
import time

import pytest

from http_helpers import call, raw_exchange, running, wait_until
from support import Receiver


@pytest.fixture(scope="module")
def echo():
    with running("http_echo.py", settings={"max_body_bytes": 4096, "max_header_bytes": 2048, "read_timeout": 1.0}) as svc:
        yield svc


def test_discovery(echo):
    r = call(echo, "GET", "/")
    assert r.status == 200
    doc = r.json()
    assert doc["predictions_url"] == "/predictions" and doc["cog_version"] == "0.23.1"
    assert doc["predictions_idempotent_url"] == "/predictions/{prediction_id}"
    assert doc["predictions_cancel_url"] == "/predictions/{prediction_id}/cancel"
    assert doc["shutdown_url"] == "/shutdown" and doc["healthcheck_url"] == "/health-check"
    assert "trainings_url" not in doc


def test_health_ready_with_setup_and_version(echo):
    body = call(echo, "GET", "/health-check").json()
    assert body["status"] == "READY"
    setup = body["setup"]
    assert setup["status"] == "succeeded" and "http_echo setup line" in setup["logs"]
    start = datetime.datetime.fromisoformat(setup["started_at"])
    end = datetime.datetime.fromisoformat(setup["completed_at"])
    assert start <= end and start.utcoffset() == datetime.timedelta(0)
    assert body["version"]["python_sdk"] == "0.23.1" and body["version"]["minicog"]
    assert "user_healthcheck_error" not in body


def test_openapi(echo):
    r = call(echo, "GET", "/openapi.json")
    assert r.status == 200 and "n" in r.json()["components"]["schemas"]["Input"]["properties"]


def test_unknown_path_and_wrong_method_are_json(echo):
    r = call(echo, "GET", "/nope")
    assert r.status == 404 and "error" in r.json()
    r = call(echo, "GET", "/predictions")
    assert r.status == 405 and r.headers["allow"] == "POST" and "error" in r.json()
    r = call(echo, "DELETE", "/predictions/abc")
    assert r.status == 405 and r.headers["allow"] == "GET, PUT"
    r = call(echo, "GET", "/docs/nope")  # /docs itself is the browser page (test_docs_routes.py)
    assert r.status == 404 and "error" in r.json()


def test_head_on_a_get_route_answers_headers_only_and_keeps_the_connection(echo):
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        conn.request("HEAD", "/health-check")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"" and int(r.headers["Content-Length"]) > 0
        assert r.headers["Server"] == r.headers["Server"].strip() and r.headers["Server"].startswith("minicog/")
        conn.request("HEAD", "/shutdown")  # POST-only routes still refuse HEAD
        r = conn.getresponse()
        assert r.status == 405 and r.read() == b""
        conn.request("GET", "/")  # the same connection is still in step
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_sync_success_body(echo):
    r = call(echo, "POST", "/predictions", {"input": {"text": "ab", "n": 2, "metric": 3}})
    assert r.status == 200
    b = r.json()
    assert b["status"] == "succeeded" and b["output"] == "abab" and b["id"].startswith("pred_")
    assert b["logs"] == "echo ab\nto stderr\n"
    assert b["metrics"]["tokens"] == 3 and b["metrics"]["timing"] == {"pre": 0.25} and b["metrics"]["lst"] == [1]
    assert b["metrics"]["predict_time"] > 0
    times = [datetime.datetime.fromisoformat(b[k]) for k in ("created_at", "started_at", "completed_at")]
    assert times == sorted(times) and all(t.utcoffset() == datetime.timedelta(0) for t in times)
    assert "input" not in b


def test_predict_time_is_the_seconds_since_the_record_was_created(echo):
    b = call(echo, "POST", "/predictions", {"input": {"sleep": 0.3}}).json()
    created, completed = (datetime.datetime.fromisoformat(b[k]) for k in ("created_at", "completed_at"))
    assert b["metrics"]["predict_time"] >= 0.3
    assert abs(b["metrics"]["predict_time"] - (completed - created).total_seconds()) < 0.05


def test_sync_failure_carries_real_logs(echo):
    b = call(echo, "POST", "/predictions", {"input": {"text": "zz", "fail": True}}).json()
    assert b["status"] == "failed" and b["error"] == "Prediction failed: ValueError: boom"
    assert b["logs"].startswith("echo zz\nto stderr\n")
    assert "output" not in b and "predict_time" in b["metrics"]


def test_no_content_type_means_empty_body(echo):
    r = call(echo, "POST", "/predictions", raw=b"not json at all")
    assert r.status == 200 and r.json()["output"] == "hi"


def test_request_errors_are_json(echo):
    r = call(echo, "POST", "/predictions", raw=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 415 and r.json() == {"error": "Expected request with `Content-Type: application/json`"}
    r = call(echo, "POST", "/predictions", raw=b"{1:2}", headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.json()["error"].startswith("Failed to parse the request body as JSON: ")
    r = call(echo, "POST", "/predictions", raw=b'{"id": 5}', headers={"Content-Type": "application/json"})
    assert r.status == 422 and "id: invalid type: integer `5`" in r.json()["error"]
    r = call(echo, "POST", "/predictions", {"input": [1]})
    assert r.status == 422 and r.json()["detail"][0]["msg"] == '[1] is not of type "object"'
    r = call(echo, "POST", "/predictions", {"input": {"n": 0, "junk": 1}})
    assert r.status == 422
    assert r.json() == {"detail": [{"loc": ["body", "input", "n"], "msg": "0 is less than the minimum of 1",
                                    "type": "value_error"}]}
    r = call(echo, "PUT", "/predictions/a%20b", {"input": {}})
    assert r.status == 400 and "Invalid prediction id" in r.json()["error"]


def test_hostile_json_is_400_and_the_server_lives_on(echo):
    # 1,900 nested arrays fit the 4 KiB body limit and exhaust json's recursion before Python 3.13
    # (400); 3.13's decoder reads them, and the non-object input is then a 422.  1e400 parses as inf.
    r = call(echo, "POST", "/predictions", raw=b'{"input": ' + b"[" * 1900 + b"]" * 1900 + b"}",
             headers={"Content-Type": "application/json"})
    assert (r.status, r.json().get("error")) == (400, "Failed to parse the request body as JSON: nested too deeply") \
        or (r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "input"]), r
    r = call(echo, "POST", "/predictions", raw=b'{"input": {"n": 1e400}}', headers={"Content-Type": "application/json"})
    assert r.status == 400 and "number out of range" in r.json()["error"], r
    assert call(echo, "POST", "/predictions", {"input": {}}).status == 200


def test_body_too_large_is_413_and_closes(echo):
    r = call(echo, "POST", "/predictions", {"input": {"text": "x" * 5000}})
    assert r.status == 413 and "exceeds the limit" in r.json()["error"]
    assert r.headers.get("connection") == "close"


def test_headers_too_large_is_431_json(echo):
    out = raw_exchange(echo.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431")
    assert json.loads(body)["error"]


def test_garbage_request_line_is_json_400(echo):
    out = raw_exchange(echo.port, b"HELLO\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400")
    assert b"application/json" in head and "error" in json.loads(body)


@pytest.mark.parametrize("head", [
    b"Content-Length: 2\r\nContent-Length: 7",  # disagreeing lengths
    b"Content-Length: +2",
    b"Content-Length: 0x2",
    b"Transfer-Encoding: gzip",  # body end unknown
    b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: chunked\r\n\r\n-1",  # read(-1) would read until the client hangs up
    b"Transfer-Encoding: chunked\r\n\r\n0x2",
    b"Transfer-Encoding: chunked\r\n\r\n1_0",
])
def test_ambiguous_body_framing_is_400_and_closes(echo, head):
    # What a proxy in front might frame differently must not be guessed at (request smuggling).
    out = raw_exchange(echo.port, b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       + head + b"\r\n\r\n{}GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out
    assert b"Connection: close" in out and b'"error"' in out


def test_chunked_and_padded_lengths_are_read(echo):
    body = b'{"input": {"text": "ck"}}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    for head, data in [(b"Transfer-Encoding: chunked", chunked),
                       (b"Content-Length:  %d " % len(body), body),
                       (b"Content-Length: %d\r\nContent-Length: %d" % (len(body), len(body)), body)]:
        out = raw_exchange(echo.port, b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           + head + b"\r\nConnection: close\r\n\r\n" + data)
        assert out.startswith(b"HTTP/1.1 200 ") and b'"output":"ck"' in out, (head, out)


def test_keep_alive_reuses_connection(echo):
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        call(echo, "GET", "/health-check", conn=conn)
        sock = conn.sock
        r = call(echo, "POST", "/predictions", {"input": {"text": "k"}}, conn=conn)
        assert r.status == 200 and conn.sock is sock
        r = call(echo, "POST", "/predictions", {"input": {"n": 0}}, conn=conn)  # errors keep it open too
        assert r.status == 422 and conn.sock is sock
    finally:
        conn.close()


def test_silent_client_is_dropped_and_does_not_block_others(echo):
    with socket.create_connection(("127.0.0.1", echo.port), timeout=5) as s:
        s.sendall(b"POST /predictions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")  # then silence
        assert call(echo, "GET", "/health-check", timeout=5).status == 200  # others are served meanwhile
        t0 = time.monotonic()
        s.settimeout(5)
        data = s.recv(1024)
        # The server gave up on the silent connection after read_timeout (1 s) and closed it.
        assert data == b"" and time.monotonic() - t0 < 4


def test_async_prefer_rfc7240_and_webhook(echo):
    with Receiver() as rx:
        r = call(echo, "POST", "/predictions", {"input": {"text": "w"}, "webhook": rx.url + "/hook"},
                 headers={"Prefer": "respond-async, wait=5", "traceparent": "00-aa-bb-01"})
        assert r.status == 202 and r.json()["status"] == "starting"
        assert r.headers["preference-applied"] == "respond-async"
        pid = r.json()["id"]
        done = rx.wait_for(lambda rs: [x for x in rs if x.json()["status"] == "succeeded"])
        body = done[0].json()
        assert body["id"] == pid and body["output"] == "w" and body["logs"] == "echo w\nto stderr\n"
        assert "input" not in body and done[0].headers["traceparent"] == "00-aa-bb-01"
        assert done[0].headers["user-agent"].startswith("minicog/")


def test_a_stuck_webhook_receiver_holds_no_slot_delays_no_cancel_blocks_no_response(echo):
    release = threading.Event()

    def stuck(rec):
        release.wait(15)  # every webhook hangs until the test is over
        return 200, {}, b""

    with Receiver(stuck) as rx:
        try:
            t0 = time.monotonic()
            r = call(echo, "POST", "/predictions", {"input": {"text": "s"}, "webhook": rx.url + "/hook"}, timeout=5)
            assert r.status == 200 and r.json()["output"] == "s"
            # The slot is free at once: the next request runs (the echo server has one slot).
            r = call(echo, "POST", "/predictions", {"input": {"text": "t"}, "webhook": rx.url + "/hook"}, timeout=5)
            assert r.status == 200 and r.json()["output"] == "t"
            r = call(echo, "PUT", "/predictions/stuck-c", {"input": {"sleep": 20}, "webhook": rx.url + "/hook"},
                     headers={"Prefer": "respond-async"})
            assert r.status == 202
            wait_until(lambda: echo.find_inflight("stuck-c") is not None and echo.find_inflight("stuck-c").status == "processing")
            assert call(echo, "POST", "/predictions/stuck-c/cancel", timeout=5).status == 200
            wait_until(lambda: echo.find_inflight("stuck-c") is None, 5, message="the cancel despite the stuck receiver")
            assert time.monotonic() - t0 < 8
            assert call(echo, "GET", "/health-check").json()["status"] == "READY"
        finally:
            release.set()
        # Let the three terminal webhooks land before the receiver goes (then nothing is left to retry).
        rx.wait_for(lambda rs: sorted(r.json()["status"] for r in rs if r.json()["status"] != "processing")
                    == ["canceled", "succeeded", "succeeded"])


def test_webhook_events_filter(echo):
    with Receiver() as rx:
        call(echo, "POST", "/predictions", {"input": {}, "webhook": rx.url, "webhook_events_filter": ["completed"]},
             headers={"Prefer": "respond-async"})
        rx.wait_for(lambda rs: rs)
        time.sleep(0.2)  # nothing else may arrive: that is what is being checked
        assert [r.json()["status"] for r in rx.requests] == ["succeeded"]


def test_put_is_idempotent_while_in_flight(echo):
    r1 = call(echo, "PUT", "/predictions/put-1", {"input": {"text": "first", "sleep": 1.0}}, headers={"Prefer": "respond-async"})
    assert r1.status == 202
    r2 = call(echo, "PUT", "/predictions/put-1", {"input": {"text": "second"}})
    assert r2.status == 202
    b = r2.json()
    assert b["id"] == "put-1" and b["status"] == "processing" and b["input"]["text"] == "first"
    # POST with the same body id does not start a second run either
    r3 = call(echo, "POST", "/predictions", {"id": "put-1", "input": {"text": "third"}})
    assert r3.status == 202 and r3.json()["input"]["text"] == "first"
    wait_until(lambda: echo.find_inflight("put-1") is None, 10)
    # once finished, it is still that prediction while it is retained (Settings.retention_seconds)
    r4 = call(echo, "PUT", "/predictions/put-1", {"input": {"text": "again"}})
    assert r4.status == 200 and r4.json()["output"] == "first" and r4.json()["input"]["text"] == "first"


def test_racing_puts_of_one_id_start_one_run(echo):
    # Ten clients PUT the same id at the same moment: one run starts, the others get its
    # snapshot (never a second run, never an "already in flight" error).
    barrier = threading.Barrier(10)
    results = []

    def put():
        barrier.wait(5)
        results.append(call(echo, "PUT", "/predictions/race-1", {"input": {"sleep": 0.5}},
                            headers={"Prefer": "respond-async"}))

    threads = [threading.Thread(target=put) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert [r.status for r in results] == [202] * 10, results
    assert sum(1 for r in results if "input" not in r.json()) == 1  # exactly one creator
    wait_until(lambda: echo.find_inflight("race-1") is None, 10)


def test_put_id_mismatch_is_422(echo):
    r = call(echo, "PUT", "/predictions/abc", {"id": "xyz", "input": {}})
    assert r.status == 422
    assert r.json()["detail"][0] == {"loc": ["body", "id"], "msg": "prediction ID must match the ID supplied in the URL",
                                     "type": "value_error"}


def test_cancel_route(echo):
    r = call(echo, "POST", "/predictions/unknown/cancel")
    assert r.status == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "No prediction with id 'unknown' is running: it is unknown or already finished"}
    r = call(echo, "PUT", "/predictions/c-1", {"input": {"sleep": 20}}, headers={"Prefer": "respond-async"})
    assert r.status == 202
    r = call(echo, "POST", "/predictions/c-1/cancel")
    assert r.status == 200 and r.json() == {}
    wait_until(lambda: echo.find_inflight("c-1") is None, 10, message="canceled prediction to end")
    assert call(echo, "POST", "/predictions/c-1/cancel").status == 404


def test_cancel_of_a_sync_prediction_answers_canceled_with_logs(echo):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=call(echo, "PUT", "/predictions/sync-c", {"input": {"sleep": 20}})))
    t.start()
    wait_until(lambda: echo.find_inflight("sync-c") is not None and echo.find_inflight("sync-c").status == "processing")
    wait_until(lambda: "echo" in echo.find_inflight("sync-c").logs)
    assert call(echo, "POST", "/predictions/sync-c/cancel").status == 200
    t.join(10)
    b = result["r"].json()
    assert b["status"] == "canceled" and b["logs"].startswith("echo hi\n") and "output" not in b


def test_client_disconnect_cancels_sync_prediction(echo):
    s = socket.create_connection(("127.0.0.1", echo.port), timeout=5)
    body = json.dumps({"input": {"sleep": 20}}).encode()
    s.sendall(b"PUT /predictions/gone-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_until(lambda: echo.find_inflight("gone-1") is not None)
    pred = echo.find_inflight("gone-1")
    s.close()
    assert pred.wait(10), "prediction was not canceled after the client left"
    assert pred.status == "canceled"


def test_409_with_retry_after_when_busy_and_health_busy(echo):
    r = call(echo, "PUT", "/predictions/busy-1", {"input": {"sleep": 20}}, headers={"Prefer": "respond-async"})
    assert r.status == 202
    try:
        r = call(echo, "POST", "/predictions", {"input": {}})
        assert r.status == 409 and r.headers["retry-after"] == "1"
        assert r.json() == {"error": "At capacity - all prediction slots busy", "status": "failed"}
        assert call(echo, "GET", "/health-check").json()["status"] == "BUSY"
        # Cog validates before it takes a slot: bad input is still a 422 when every slot is busy.
        r = call(echo, "POST", "/predictions", {"input": {"n": 99}})
        assert r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "input", "n"]
        # A 409 leaves nothing behind: no record to read, no webhook.
        r = call(echo, "PUT", "/predictions/refused-1", {"input": {}, "webhook": "http://127.0.0.1:9/hook"})
        assert r.status == 409
        assert call(echo, "GET", "/predictions/refused-1").status == 404
    finally:
        call(echo, "POST", "/predictions/busy-1/cancel")
        wait_until(lambda: echo.find_inflight("busy-1") is None, 10)


def test_back_to_back_sync_requests_never_409(echo):
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    try:
        statuses = [call(echo, "POST", "/predictions", {"input": {}}, conn=conn).status for _ in range(30)]
    finally:
        conn.close()
    assert statuses == [200] * 30


def test_sse_on_non_streaming_model_is_406(echo):
    r = call(echo, "POST", "/predictions", {"input": {}}, headers={"Accept": "text/event-stream"})
    assert r.status == 406
    assert r.json() == {"error": "This model does not support streaming responses. Add @cog.streaming to predict() to enable SSE."}
    r = call(echo, "POST", "/trainings", {"input": {}}, headers={"Accept": "text/event-stream"})
    assert r.status == 406 and r.json() == {"error": "Training endpoints do not support streaming responses."}


def test_trainings_routes_use_the_same_machinery(echo):
    r = call(echo, "POST", "/trainings", {"input": {"text": "t"}})
    assert r.status == 200 and r.json()["output"] == "t"
    r = call(echo, "PUT", "/trainings/tr-1", {"input": {"sleep": 20}}, headers={"Prefer": "respond-async"})
    assert r.status == 202
    assert call(echo, "POST", "/trainings/tr-1/cancel").status == 200
    wait_until(lambda: echo.find_inflight("tr-1") is None, 10)


def test_handler_exception_is_logged_and_answered_500_json(echo, monkeypatch, caplog):
    def broken():
        raise RuntimeError("discovery exploded")

    monkeypatch.setattr(echo, "discovery", broken)  # inject a fault into the app behind the handler
    with caplog.at_level("ERROR", logger="minicog.http"):
        r = call(echo, "GET", "/")
    assert r.status == 500 and r.json() == {"error": "Internal server error (see the server log)"}
    assert "discovery exploded" in caplog.text and "Traceback" in caplog.text
    monkeypatch.undo()
    assert call(echo, "GET", "/").status == 200  # the server lives on


@pytest.mark.parametrize("cls", ["Predictor", "AsyncPredictor"])
def test_recording_none_deletes_the_metric_in_sync_and_async_models(cls):
    with running("metrics_none_deletes.py:" + cls) as svc:
        b = call(svc, "POST", "/predictions", {"input": {}}).json()
        assert b["status"] == "succeeded", b
        metrics = dict(b["metrics"])
        assert metrics.pop("predict_time") >= 0
        assert metrics == {"kept": 1, "timing": {"pre": 0.5}, "steps": 7}


def test_secrets_are_redacted_in_every_echo_of_a_prediction(tmp_path):
    # A PUT of an id in flight echoes the stored input; webhooks and SSE carry the
    # prediction too.  The secret must appear in none of them, while the model gets it.
    gate = tmp_path / "gate"
    secret = "hunter2-" + "s3cr3t"
    body = {"input": {"api_key": secret, "other": secret, "gate": str(gate), "note": "n"}}
    with Receiver() as rx, running("secrets_echo.py") as svc:
        first = call(svc, "PUT", "/predictions/p1", {**body, "webhook": rx.url + "/hook"},
                     headers={"Prefer": "respond-async"})
        assert first.status == 202
        wait_until(lambda: "holding" in (svc.find_inflight("p1").logs if svc.find_inflight("p1") else ""), 10)
        again = call(svc, "PUT", "/predictions/p1", body)
        assert again.status == 202
        echoed = again.json()["input"]
        assert echoed == {"api_key": "**********", "other": "**********", "gate": str(gate), "note": "n"}
        c = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=20)
        c.request("PUT", "/predictions/p1", json.dumps(body), {"Content-Type": "application/json",
                                                               "Accept": "text/event-stream"})
        stream = c.getresponse()
        gate.write_text("open")
        sse = stream.read()
        c.close()
        assert b"completed" in sse and secret.encode() not in sse
        rx.wait_for(lambda rs: any(b'"succeeded"' in r.body for r in rs), 10)
        final = json.loads([r for r in rx.requests if b'"succeeded"' in r.body][-1].body)
        assert final["output"] == secret[::-1] + "+other"
        assert all(secret.encode() not in r.body for r in rx.requests)
        assert secret.encode() not in again.body and secret.encode() not in first.body
        got = call(svc, "GET", "/predictions/p1")  # the finished, retained record
        assert got.status == 200 and got.json()["input"]["api_key"] == "**********"
        assert secret.encode() not in got.body


def test_a_spooled_data_uri_input_is_echoed_as_sent(tmp_path):
    # A large data: URI input is decoded to a file while the body is parsed; the
    # PUT-in-flight echo writes it back from that file, identical to what was sent.
    import base64
    import os

    gate = tmp_path / "gate"
    uri = "data:image/png;base64," + base64.b64encode(os.urandom(300_000)).decode()
    body = {"input": {"api_key": "k", "gate": str(gate), "attachment": uri}}
    with running("secrets_echo.py", settings={"data_uri_spool_chars": 64 * 1024}) as svc:
        assert call(svc, "PUT", "/predictions/big", body, headers={"Prefer": "respond-async"}).status == 202
        wait_until(lambda: svc.find_inflight("big") is not None and "holding" in svc.find_inflight("big").logs, 10)
        again = call(svc, "PUT", "/predictions/big", {"input": {}})
        assert again.status == 202
        assert again.json()["input"] == {"api_key": "**********", "gate": str(gate), "attachment": uri}
        gate.write_text("open")
        wait_until(lambda: svc.find_inflight("big") is None, 20, message="the prediction to end")
