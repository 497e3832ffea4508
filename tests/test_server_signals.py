"""The real `python -m minicog serve` process: SIGTERM drain, --await-explicit-shutdown, JSON logs."""

import json
import os
import signal
import threading
import time

import pytest

from http_helpers import call, wait_until
from support import predictor


@pytest.mark.slow
def test_sigterm_drains_in_flight_prediction_and_exits_0(serve_proc):
    p = serve_proc(predictor("http_echo.py"))
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "READY", 30)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=call(p.port, "POST", "/predictions", {"input": {"text": "drain", "sleep": 1.5}})))
    t.start()
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "BUSY", 10)
    p.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "DRAINING", 5)
    assert call(p.port, "POST", "/predictions", {"input": {}}).status == 503
    t.join(15)
    assert result["r"].status == 200 and result["r"].json()["output"] == "drain"
    assert p.proc.wait(20) == 0
    assert any("shutting down" in line for line in p.lines)


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_still_drains(serve_proc):
    """`timeout`, `docker stop` without an init and terminal job control signal the whole group:
    the worker must leave its fate to the parent, so the in-flight prediction still completes."""
    p = serve_proc(predictor("http_echo.py"), new_session=True)
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "READY", 30)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=call(p.port, "POST", "/predictions", {"input": {"text": "group", "sleep": 1.5}})))
    t.start()
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "BUSY", 10)
    os.killpg(p.proc.pid, signal.SIGTERM)  # the group this test created for the server alone
    t.join(15)
    assert result["r"].status == 200 and result["r"].json()["status"] == "succeeded", result["r"].json()
    assert result["r"].json()["output"] == "group"
    assert p.proc.wait(20) == 0
    assert not any("crashed" in line for line in p.lines), p.lines


@pytest.mark.slow
def test_await_explicit_shutdown_ignores_sigterm_until_post_shutdown(serve_proc):
    p = serve_proc(predictor("http_echo.py"), "--await-explicit-shutdown", "--log-format", "json")
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "READY", 30)
    p.proc.send_signal(signal.SIGTERM)
    p.wait_line("SIGTERM ignored")
    assert p.proc.poll() is None
    assert call(p.port, "POST", "/predictions", {"input": {}}).json()["status"] == "succeeded"
    assert call(p.port, "POST", "/shutdown").status == 200
    assert p.proc.wait(20) == 0
    docs = [json.loads(line) for line in p.lines if line.strip()]
    assert docs and all({"time", "level", "logger", "message"} <= set(d) for d in docs)


def test_sigint_stops_even_with_await_explicit_shutdown(serve_proc):
    p = serve_proc(predictor("http_echo.py"), "--await-explicit-shutdown", "true")
    p.proc.send_signal(signal.SIGINT)
    assert p.proc.wait(20) == 0
    assert any("SIGINT" in line for line in p.lines)


def test_a_second_signal_cuts_the_drain_short(serve_proc):
    # Grace period 60 s: without the second signal the drain would wait for the 30 s prediction.
    p = serve_proc(predictor("http_echo.py"), env={"MINICOG_SHUTDOWN_GRACE_PERIOD": "60", "MINICOG_CANCEL_GRACE_PERIOD": "2"})
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "READY", 30)
    r = call(p.port, "PUT", "/predictions/long-1", {"input": {"sleep": 30}}, headers={"Prefer": "respond-async"})
    assert r.status == 202
    wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "BUSY", 10)
    p.proc.send_signal(signal.SIGTERM)
    p.wait_line("shutting down: 1 prediction")
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(15) == 0
    assert any("canceling 1 prediction" in line and "long-1" in line for line in p.lines)


def test_a_second_signal_exits_within_seconds_even_with_undeliverable_webhooks(serve_proc):
    # Every terminal webhook fails (500), so a plain drain would retry for minutes (grace 60 s).
    from support import Receiver

    with Receiver(lambda r: (500, {}, b"down")) as hook:
        p = serve_proc(predictor("http_echo.py"), env={"MINICOG_SHUTDOWN_GRACE_PERIOD": "60",
                                                      "MINICOG_CANCEL_GRACE_PERIOD": "5"})
        wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "READY", 30)
        r = call(p.port, "PUT", "/predictions/done-1", {"input": {"text": "a"}, "webhook": hook.url + "/hook"})
        assert r.status == 200
        r = call(p.port, "PUT", "/predictions/long-2", {"input": {"sleep": 60}, "webhook": hook.url + "/hook"},
                 headers={"Prefer": "respond-async"})
        assert r.status == 202
        hook.wait_for(lambda reqs: any(q.json()["id"] == "done-1" and q.json()["status"] == "succeeded" for q in reqs))
        p.proc.send_signal(signal.SIGINT)
        # The first signal says what happens and how to stop at once.
        p.wait_line(r"shutting down: 1 prediction\(s\) in flight, 1 terminal webhook\(s\) pending; draining for "
                    r"up to 60s .*A second Ctrl-C \(SIGINT or SIGTERM\) stops at once")
        assert p.proc.poll() is None  # still draining: long-2 runs on
        started = time.monotonic()
        p.proc.send_signal(signal.SIGINT)
        assert p.proc.wait(15) == 0
        elapsed = time.monotonic() - started
        assert elapsed < 10, f"the second signal took {elapsed:.1f}s to stop the server"
        p.thread.join(10)
        p.wait_line(r"stopping at once \(second signal\): canceling 1 prediction\(s\) still running: long-2")
        # Each terminal webhook left undelivered is reported by prediction id.
        for pid in ("done-1", "long-2"):
            p.wait_line(rf"terminal webhook for prediction {pid} to http://127\.0\.0\.1:\d+/hook was not delivered")
        # long-2 ended canceled (its cancel landed before the worker was stopped).
        assert any("prediction long-2 canceled" in line for line in p.lines), p.lines[-15:]
        p.wait_line(r"INFO minicog\.server: stopped$")


@pytest.mark.parametrize("when", ["while the workers spawn", "once ready", "after setup failed"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_removes_the_servers_temp_folder(tmp_path, when, sig):
    # The engine's folder (minicog-*) lives in TMPDIR, here one this test owns.  A signal
    # sent while the workers spawn lands before serve() owns the handlers: it used to end
    # the process by SIGTERM's default action and leave the folder behind.
    from support import ServeProcess

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    model = "http_setup_fail.py" if when == "after setup failed" else "http_echo.py"
    p = ServeProcess(predictor(model), env={"TMPDIR": str(tmp)})
    try:
        wait_until(lambda: any(tmp.glob("minicog-*")), 30, interval=0.002)
        if when == "once ready":
            p.wait_ready()
        elif when == "after setup failed":
            p.wait_listening()
            wait_until(lambda: call(p.port, "GET", "/health-check").json()["status"] == "SETUP_FAILED", 30)
        p.proc.send_signal(sig)
        assert p.proc.wait(30) == 0, p.lines[-10:]
        assert sorted(os.listdir(tmp)) == []
    finally:
        p.close()
