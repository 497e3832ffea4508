"""Deadlines (Cancel-After, MINICOG_DEFAULT_DEADLINE) and bounded sync waits (Prefer: wait=N)
against a real service, real workers and a real webhook receiver."""

import time

import pytest

from http_helpers import call, running
from minicog.server.deadlines import prefer_wait
from minicog.settings import Settings, parse_duration
from support import Receiver, wait_until


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("1m", 60), ("1h30m", 5400), ("30", 30), ("1.5", 1.5),
                                           ("500ms", 0.5), ("2m30s", 150), (" 10s ", 10)])
def test_durations_as_replicate_spells_them(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "0", "0s", "-5s", "abc", "1x", "1m30", "1e3", "5 s", "9999999h"])
def test_malformed_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_prefer_wait_values():
    assert prefer_wait({}) is None and prefer_wait({"wait": None}) is None and prefer_wait({"wait": "7"}) == 7


@pytest.mark.slow
def test_a_running_prediction_is_canceled_when_its_deadline_passes():
    with running("http_echo.py") as svc:
        t0 = time.monotonic()
        r = call(svc, "POST", "/predictions", {"input": {"sleep": 30}}, headers={"Cancel-After": "1s"})
        assert r.status == 200, r
        body = r.json()
        assert body["status"] == "canceled"
        assert time.monotonic() - t0 < 15
        assert "deadline (1s) passed" in body["logs"] and "echo hi" in body["logs"]
        # The slot is free again and a prediction without a deadline runs to its end.
        r = call(svc, "POST", "/predictions", {"input": {"sleep": 1.5}})
        assert r.json()["status"] == "succeeded"


def test_a_deadline_that_passes_before_the_start_means_never_started():
    with running("http_echo.py") as svc:
        r = call(svc, "PUT", "/predictions/late", {"input": {"text": "never"}}, headers={"Cancel-After": "1ns"})
        body = r.json()
        assert body["status"] == "canceled" and "started_at" not in body
        assert "echo never" not in body["logs"] and "before the prediction started" in body["logs"]
        assert svc.orchestrator.free_slots == 1


@pytest.mark.parametrize("value", ["soon", "0", "-1s", "1m30", ""])
def test_a_malformed_cancel_after_is_a_400_naming_the_header(value):
    with running("http_echo.py") as svc:
        r = call(svc, "POST", "/predictions", {"input": {}}, headers={"Cancel-After": value})
        assert r.status == 400 and "Cancel-After" in r.json()["error"], r
        assert svc.orchestrator.free_slots == 1  # nothing was started


def test_a_malformed_prefer_wait_is_a_400_naming_the_header():
    with running("http_echo.py") as svc:
        r = call(svc, "POST", "/predictions", {"input": {}}, headers={"Prefer": "wait=soon"})
        assert r.status == 400 and "Prefer" in r.json()["error"], r


@pytest.mark.slow
def test_prefer_wait_answers_in_time_and_the_prediction_goes_on_with_its_webhooks():
    with Receiver() as rx, running("http_echo.py") as svc:
        t0 = time.monotonic()
        r = call(svc, "POST", "/predictions", {"input": {"sleep": 3}, "webhook": rx.url},
                 headers={"Prefer": "wait=1"})
        elapsed = time.monotonic() - t0
        assert r.status == 202 and r.json()["status"] == "processing", r
        assert r.headers["preference-applied"] == "wait=1"
        assert 0.9 <= elapsed < 2.9
        pid = r.json()["id"]
        done = rx.wait_for(lambda rs: [q for q in rs if q.json()["status"] == "succeeded"], timeout=20)
        assert done[0].json()["id"] == pid and done[0].json()["output"] == "hi"


def test_prefer_wait_longer_than_the_prediction_and_bare_wait_answer_the_result():
    with running("http_echo.py") as svc:
        r = call(svc, "POST", "/predictions", {"input": {"sleep": 0.2}}, headers={"Prefer": "wait=30"})
        assert r.status == 200 and r.json()["status"] == "succeeded"
        r = call(svc, "POST", "/predictions", {"input": {"sleep": 0.2}}, headers={"Prefer": "wait"})
        assert r.status == 200 and r.json()["status"] == "succeeded"


@pytest.mark.slow
def test_the_server_wide_default_deadline_and_the_header_overriding_it():
    with Receiver() as rx, running("http_echo.py", settings=dict(default_deadline=1.0)) as svc:
        r = call(svc, "POST", "/predictions", {"input": {"sleep": 30}, "webhook": rx.url,
                                               "webhook_events_filter": ["completed"]},
                 headers={"Prefer": "respond-async"})
        assert r.status == 202
        (hook,) = rx.wait_for(lambda rs: rs, timeout=20)
        assert hook.json()["status"] == "canceled" and "deadline (1s) passed" in hook.json()["logs"]
        r = call(svc, "POST", "/predictions", {"input": {"sleep": 2}}, headers={"Cancel-After": "30s"})
        assert r.json()["status"] == "succeeded"


def test_the_default_deadline_is_read_from_the_environment():
    assert Settings.from_env({"MINICOG_DEFAULT_DEADLINE": "1h30m"}).default_deadline == 5400
    assert Settings.from_env({"MINICOG_DEFAULT_DEADLINE": "later"}).default_deadline is None


def test_finished_predictions_leave_no_deadline_behind():
    with running("http_echo.py") as svc:
        for _ in range(5):
            assert call(svc, "POST", "/predictions", {"input": {}}, headers={"Cancel-After": "1h"}).json()["status"] == "succeeded"
        wait_until(lambda: len(svc.timers) == 0, message="the deadline timers dropped")
        assert svc._deadlines == {}


@pytest.mark.slow
def test_a_request_waiting_for_a_slot_past_its_deadline_is_never_started():
    # One slot, busy for ~2 s; the second request waits for the slot (slot_wait), and its
    # 1 s deadline, counted from its arrival, has passed when the slot frees.
    import threading
    with running("http_echo.py", settings=dict(slot_wait=10.0)) as svc:
        first = threading.Thread(target=call, args=(svc, "POST", "/predictions", {"input": {"sleep": 2}}))
        first.start()
        wait_until(lambda: svc.orchestrator.free_slots == 0, message="the slot taken")
        r = call(svc, "POST", "/predictions", {"input": {"text": "late"}}, headers={"Cancel-After": "1s"})
        first.join(30)
        body = r.json()
        assert r.status == 200 and body["status"] == "canceled" and "started_at" not in body, body
        assert "echo late" not in body["logs"]
