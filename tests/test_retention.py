"""Finished predictions can be read back for a bounded time and number (Settings.retention_*).

Real services with real workers on 127.0.0.1: ``GET /predictions/{id}`` answers
the current or final state, a ``PUT`` of a finished id returns that prediction
instead of running the model again, an SSE reattach with ``Last-Event-ID``
after the end replays what was missed and the completed event, file outputs
stay while the record is kept and go when it is forgotten.
"""

from __future__ import annotations

import base64
import http.client
import json
import time

import pytest

from http_helpers import call, running, sse_events, wait_until


def test_get_answers_the_current_then_the_final_state_and_404_as_json():
    with running("http_echo.py") as svc:
        r = call(svc, "GET", "/predictions/nobody")
        assert r.status == 404 and r.headers["content-type"] == "application/json"
        assert r.json()["error"].startswith("No prediction with id 'nobody': it is unknown, or finished more than 600s ago")
        r = call(svc, "PUT", "/predictions/g-1", {"input": {"text": "x", "sleep": 1.0}}, headers={"Prefer": "respond-async"})
        assert r.status == 202
        r = call(svc, "GET", "/predictions/g-1")
        assert r.status == 200 and r.json()["status"] in ("starting", "processing") and r.json()["input"]["text"] == "x"
        wait_until(lambda: call(svc, "GET", "/predictions/g-1").json()["status"] == "succeeded", 20,
                   message="the prediction to finish")
        body = call(svc, "GET", "/predictions/g-1").json()
        assert body["output"] == "x" and "echo x" in body["logs"] and body["completed_at"]
        assert body["metrics"]["predict_time"] > 0
        # The same record under /trainings too: ids are one namespace, as for PUT.
        assert call(svc, "GET", "/trainings/g-1").json()["id"] == "g-1"
        # A finished prediction cannot be canceled: 404 with a reason.
        r = call(svc, "POST", "/predictions/g-1/cancel")
        assert r.status == 404 and "already finished" in r.json()["error"]


def test_put_of_a_finished_id_returns_it_without_running_the_model_again():
    with running("http_echo.py") as svc:
        first = call(svc, "PUT", "/predictions/p-1", {"input": {"text": "once"}})
        assert first.status == 200 and first.json()["output"] == "once"
        again = call(svc, "PUT", "/predictions/p-1", {"input": {"text": "twice"}})
        assert again.status == 200
        body = again.json()
        assert body["output"] == "once" and body["input"] == {"text": "once"}
        assert body["logs"] == first.json()["logs"] and body["completed_at"] == first.json()["completed_at"]
        # POST with the body id: the same rule.
        assert call(svc, "POST", "/predictions", {"id": "p-1", "input": {"text": "third"}}).json()["output"] == "once"
        assert body["logs"].count("echo ") == 1  # the model ran once


def test_retention_off_forgets_at_once_and_reruns():
    with running("http_echo.py", settings={"retention_seconds": 0}) as svc:
        assert call(svc, "PUT", "/predictions/r-1", {"input": {"text": "a"}}).json()["output"] == "a"
        assert call(svc, "GET", "/predictions/r-1").status == 404
        assert call(svc, "PUT", "/predictions/r-1", {"input": {"text": "b"}}).json()["output"] == "b"


@pytest.mark.slow
def test_records_expire_after_the_time_and_the_oldest_go_beyond_the_count():
    with running("http_echo.py", settings={"retention_seconds": 1.0, "retention_max_records": 2}) as svc:
        for i in range(3):
            assert call(svc, "PUT", f"/predictions/c-{i}", {"input": {"text": str(i)}}).status == 200
        # The monitor trims to the count twice a second: the oldest goes first.
        wait_until(lambda: call(svc, "GET", "/predictions/c-0").status == 404, 5, message="c-0 evicted")
        assert call(svc, "GET", "/predictions/c-2").status == 200
        wait_until(lambda: call(svc, "GET", "/predictions/c-2").status == 404, 5, message="c-2 expired")
        wait_until(lambda: not svc._finished, 5, message="expired records forgotten")
        # Forgotten, the id is free: a PUT runs the model again.
        assert call(svc, "PUT", "/predictions/c-2", {"input": {"text": "new"}}).json()["output"] == "new"


@pytest.mark.slow
def test_file_outputs_stay_while_retained_and_go_with_the_record():
    with running("http_files.py", settings={"retention_seconds": 1.5}) as svc:
        first = call(svc, "PUT", "/predictions/f-1", {"input": {"count": 2}}).json()
        assert first["status"] == "succeeded"
        expected = ["data:text/plain;base64," + base64.b64encode(f"file {i}".encode()).decode() for i in range(2)]
        assert first["output"] == expected
        assert svc.engine.open_runs(), "a retained record keeps its files"
        assert call(svc, "GET", "/predictions/f-1").json()["output"] == expected
        wait_until(lambda: not svc.engine.open_runs(), 10, message="the files to go with the record")
        assert call(svc, "GET", "/predictions/f-1").status == 404


def _sse(svc, method: str, path: str, body: dict, headers: dict | None = None) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=20)
    try:
        conn.request(method, path, body=json.dumps(body),
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream", **(headers or {})})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        return [e for e in sse_events(resp) if "event" in e]
    finally:
        conn.close()


def test_sse_reattach_after_the_end_replays_missed_events_and_completed():
    with running("http_stream.py") as svc:
        r = call(svc, "PUT", "/predictions/s-1", {"input": {"n": 4}}, headers={"Prefer": "respond-async"})
        assert r.status == 202
        wait_until(lambda: call(svc, "GET", "/predictions/s-1").json()["status"] == "succeeded", 20,
                   message="the stream to finish")
        everything = _sse(svc, "PUT", "/predictions/s-1", {"input": {"n": 4}})
        assert [e["event"] for e in everything][0] == "start" and everything[-1]["event"] == "completed"
        assert [e["data"]["chunk"] for e in everything if e["event"] == "output"] == ["tok0", "tok1", "tok2", "tok3"]
        # Resume after the second output: exactly what came after it.
        second_output = [e for e in everything if e["event"] == "output"][1]
        rest = _sse(svc, "PUT", "/predictions/s-1", {"input": {"n": 4}}, {"Last-Event-ID": second_output["id"]})
        assert [e["id"] for e in rest] == [e["id"] for e in everything if int(e["id"]) > int(second_output["id"])]
        assert rest[-1]["event"] == "completed" and rest[-1]["data"]["output"] == ["tok0", "tok1", "tok2", "tok3"]
        assert call(svc, "GET", "/predictions/s-1").json()["logs"].count("tick 0") == 1  # ran once


def test_a_disconnected_creator_stream_still_cancels_its_prediction():
    with running("http_stream.py") as svc:
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=20)
        conn.request("PUT", "/predictions/d-1", body=json.dumps({"input": {"n": 200, "gap": 0.05}}),
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        events = sse_events(resp)
        while next(events).get("event") != "output":
            pass
        conn.sock.close()  # the creator goes away mid-stream: Cog cancels
        conn.close()
        wait_until(lambda: call(svc, "GET", "/predictions/d-1").json()["status"] == "canceled", 20,
                   message="the prediction to be canceled")
        started = time.monotonic()
        # Retained as canceled, and a PUT does not start it again.
        body = call(svc, "PUT", "/predictions/d-1", {"input": {"n": 200}}).json()
        assert body["status"] == "canceled" and time.monotonic() - started < 10
