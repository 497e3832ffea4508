"""The service around the HTTP server: health states, readiness file, 503s, shutdown and drain."""

import os
import threading

import pytest


from http_helpers import call, running, wait_until
from minicog.server.service import JSONFormatter, configure_logging
from support import Receiver


def env_with(**kw):
    return {**os.environ, **kw}


def test_starting_then_ready_503_with_retry_after_and_readiness_file(tmp_path):
    gate = tmp_path / "gate"
    ready_file = tmp_path / "run" / "ready"
    with running("http_gate.py", ready=False, env=env_with(HTTP_SETUP_GATE=str(gate)),
                 settings={"kubernetes_service_host": "10.0.0.1", "readiness_file": str(ready_file)}) as svc:
        h = call(svc, "GET", "/health-check").json()
        assert h["status"] == "STARTING" and h["setup"]["status"] == "starting" and "completed_at" not in h["setup"]
        r = call(svc, "POST", "/predictions", {"input": {}})
        assert r.status == 503 and r.headers["retry-after"] == "1"
        assert r.json() == {"error": "Setup has not finished yet. Wait until it has finished, or GET /health-check for status.",
                            "status": "failed"}
        r = call(svc, "GET", "/openapi.json")
        assert r.status == 503 and r.json() == {"error": "OpenAPI schema not available"}
        assert not ready_file.exists()
        gate.write_text("open")
        assert svc.wait_ready(20)
        wait_until(lambda: ready_file.exists(), 5, message="readiness file")
        h = call(svc, "GET", "/health-check").json()
        assert h["status"] == "READY" and "waiting for the gate" in h["setup"]["logs"]
        # Draining: health says so at once, the readiness file goes, new work gets 503.
        r = call(svc, "PUT", "/predictions/d1", {"input": {"sleep": 1.0}}, headers={"Prefer": "respond-async"})
        assert r.status == 202
        stopper = threading.Thread(target=svc.stop)
        stopper.start()
        wait_until(lambda: svc.draining, 5)
        assert call(svc, "GET", "/health-check").json()["status"] == "DRAINING"
        assert not ready_file.exists()
        r = call(svc, "POST", "/predictions", {"input": {}})
        assert r.status == 503 and r.headers["retry-after"] == "1"
        pred = svc.find_inflight("d1")
        stopper.join(10)
        assert pred is None or pred.status == "succeeded"  # the in-flight prediction was let finish


def test_setup_failed_health_and_503():
    with running("http_setup_fail.py", ready=False) as svc:
        wait_until(lambda: svc.orchestrator.state == "SETUP_FAILED", 20)
        h = call(svc, "GET", "/health-check").json()
        assert h["status"] == "SETUP_FAILED" and h["setup"]["status"] == "failed"
        assert "weights missing" in h["setup"]["logs"] and "completed_at" in h["setup"]
        r = call(svc, "POST", "/predictions", {"input": {}})
        assert r.status == 503 and r.headers["retry-after"] == "1"


def test_unhealthy_with_user_healthcheck_error(tmp_path):
    marker = tmp_path / "sick"
    with running("http_health.py", env=env_with(HTTP_HEALTH_FILE=str(marker))) as svc:
        assert call(svc, "GET", "/health-check").json()["status"] == "READY"
        marker.write_text("x")
        h = call(svc, "GET", "/health-check").json()
        assert h["status"] == "UNHEALTHY"
        assert "disk on fire" in h["user_healthcheck_error"]
        # predictions are still accepted while unhealthy (Cog)
        assert call(svc, "POST", "/predictions", {"input": {}}).json()["output"] == "ok"
        marker.unlink()
        assert call(svc, "GET", "/health-check").json()["status"] == "READY"


def test_unhealthy_wins_over_busy(tmp_path):
    marker = tmp_path / "sick"
    with running("http_health.py", env=env_with(HTTP_HEALTH_FILE=str(marker))) as svc:
        r = call(svc, "PUT", "/predictions/busy-sick", {"input": {"sleep": 20}}, headers={"Prefer": "respond-async"})
        assert r.status == 202
        wait_until(lambda: call(svc, "GET", "/health-check").json()["status"] == "BUSY", 10, message="BUSY")
        marker.write_text("x")
        h = call(svc, "GET", "/health-check").json()
        assert h["status"] == "UNHEALTHY" and "disk on fire" in h["user_healthcheck_error"]
        assert call(svc, "POST", "/predictions/busy-sick/cancel").status == 200
        wait_until(lambda: svc.find_inflight("busy-sick") is None, 10)


def test_worker_crash_fails_prediction_then_defunct():
    with running("dies_mid_prediction.py", settings={"max_worker_restarts": 0}) as svc:
        b = call(svc, "POST", "/predictions", {"input": {"how": "exit"}}).json()
        assert b["status"] == "failed" and "Worker crashed" in b["error"] and "about to die" in b["logs"]
        wait_until(lambda: svc.orchestrator.state == "DEFUNCT", 20)
        assert call(svc, "GET", "/health-check").json()["status"] == "DEFUNCT"
        assert call(svc, "POST", "/predictions", {"input": {}}).status == 503


def test_worker_crash_respawns_starting_then_ready():
    with running("dies_mid_prediction.py", settings={"max_worker_restarts": 3}) as svc:
        b = call(svc, "POST", "/predictions", {"input": {"how": "kill"}}).json()
        assert b["status"] == "failed"
        assert svc.wait_ready(20)
        assert call(svc, "POST", "/predictions", {"input": {}}).json()["status"] == "succeeded"


def test_shutdown_route_requests_shutdown():
    with running("http_echo.py") as svc:
        r = call(svc, "POST", "/shutdown")
        assert r.status == 200 and r.json() == {}
        assert svc.wait_shutdown_requested(5)
        assert svc._closed.wait(10), "an embedded service stops itself on POST /shutdown"
        assert svc.orchestrator.state == "STOPPED"


def test_stop_flushes_pending_terminal_webhook():
    attempts = []

    def responder(rec):
        attempts.append(rec)
        return (503 if len(attempts) < 3 else 200), {}, b""

    with Receiver(responder) as rx:
        with running("http_echo.py", settings={"webhook_backoff_base": 0.1}) as svc:
            r = call(svc, "POST", "/predictions", {"input": {}, "webhook": rx.url, "webhook_events_filter": ["completed"]},
                     headers={"Prefer": "respond-async"})
            assert r.status == 202
            wait_until(lambda: attempts, 10)
            svc.stop()  # waits for the retries (0.2 s, 0.4 s) within the grace period
            assert [x.json()["status"] for x in attempts] == ["succeeded"] * 3


def test_stop_reports_undelivered_webhooks(caplog):
    with Receiver(lambda rec: (503, {}, b"")) as rx:
        with running("http_echo.py", settings={"webhook_backoff_base": 1.0, "shutdown_grace_period": 0.5}) as svc:
            call(svc, "PUT", "/predictions/undelivered", {"input": {}, "webhook": rx.url}, headers={"Prefer": "respond-async"})
            rx.wait_for(lambda rs: any(r.json()["status"] == "succeeded" for r in rs))
            with caplog.at_level("ERROR", logger="minicog"):
                svc.stop()
            assert "undelivered" in caplog.text and "not delivered" in caplog.text


def test_train_mode_discovery_and_validation():
    with running("http_train.py", mode="train") as svc:
        doc = call(svc, "GET", "/").json()
        assert doc["trainings_url"] == "/trainings" and doc["trainings_cancel_url"] == "/trainings/{training_id}/cancel"
        assert call(svc, "POST", "/trainings", {"input": {"steps": 3}}).json()["output"] == "trained 3"
        r = call(svc, "POST", "/trainings", {"input": {"steps": 0}})
        assert r.status == 422 and r.json()["detail"][0]["loc"] == ["body", "input", "steps"]
        assert call(svc, "POST", "/predictions", {"input": {"steps": 2}}).json()["output"] == "trained 2"


def test_json_log_format(capsys):
    import io
    import json
    import logging
    stream = io.StringIO()
    root = logging.getLogger("minicog")
    saved = (root.propagate, root.level)
    handler = configure_logging("json", "info", stream=stream)
    try:
        logger = logging.getLogger("minicog.test")
        logger.info("hello %s", "world")
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("failed")
    finally:
        handler.flush()  # written on the console's own thread
        root.removeHandler(handler)
        handler.close()
        root.propagate, root.level = saved
    lines = stream.getvalue().splitlines()
    docs = [json.loads(line) for line in lines]
    assert docs[0]["message"] == "hello world" and docs[0]["level"] == "INFO" and docs[0]["logger"] == "minicog.test"
    assert "ValueError: bad" in docs[1]["exception"]
    assert isinstance(JSONFormatter(), logging.Formatter)


def test_stop_cancels_predictions_still_running_after_the_grace_period():
    with running("http_echo.py", settings={"shutdown_grace_period": 0.3}) as svc:
        r = call(svc, "PUT", "/predictions/long", {"input": {"sleep": 30}}, headers={"Prefer": "respond-async"})
        assert r.status == 202
        pred = svc.find_inflight("long")
        import time
        t0 = time.monotonic()
        svc.stop()
        assert pred.status == "canceled" and time.monotonic() - t0 < 5


def test_serve_returns_1_when_the_port_is_taken():
    import socket
    from minicog.server.service import serve
    from support import predictor
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        import logging
        root = logging.getLogger("minicog")
        saved = (root.propagate, root.level, list(root.handlers))
        try:
            assert serve(predictor("http_echo.py"), host="127.0.0.1", port=port) == 1
        finally:
            for h in root.handlers[:]:
                if h not in saved[2]:
                    root.removeHandler(h)
            root.propagate, root.level = saved[0], saved[1]



def test_reused_id_while_the_earlier_run_still_holds_its_files():
    """Each run's release removes its own folder, and both records leave the service."""
    from minicog.server.http import PredictionRequest

    # Tiny inline limit: every input is spilled, so each run's folder exists on disk.  No
    # retention, so the finished id can be used again at once.
    with running("http_files.py", settings={"max_inline_ipc_bytes": 4, "retention_seconds": 0}) as svc:
        root = svc.orchestrator._tmp_root

        def run():
            pred, created = svc.create("prediction", PredictionRequest(id="again", input={"count": 1}), sse=False,
                                       headers={})
            assert created
            return pred

        first = run()  # create() holds a reference for its caller: the first run's files stay
        assert first.wait(20) and first.status == "succeeded", first.snapshot()
        assert len(os.listdir(root)) == 1
        second = run()
        assert second.wait(20) and second.status == "succeeded", second.snapshot()
        second.release()
        # The second run's last reference is gone: its folder went, the first's stayed.
        wait_until(lambda: len(os.listdir(root)) == 1, 5, message="only the first run's folder left")
        first.release()
        assert os.listdir(root) == []
        with svc._lock:
            assert not svc.engine.open_runs()


_FREEZE_PROBE = """
import gc, json, sys, threading, time, urllib.request
from minicog.server.service import serve
from minicog.settings import Settings

settings = Settings.from_env()
before = gc.get_freeze_count()  # (not 0 on every Python: 3.12 starts with some)
done = []
threading.Thread(target=lambda: done.append(serve(sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]),
                                                  settings=settings)), daemon=True).start()
url = "http://127.0.0.1:%s" % sys.argv[2]
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url + "/health-check", timeout=2) as r:
            if json.load(r)["status"] == "READY":
                break
    except OSError:
        pass
    time.sleep(0.05)
frozen = gc.get_freeze_count()
urllib.request.urlopen(urllib.request.Request(url + "/shutdown", method="POST"), timeout=5).read()
deadline = time.monotonic() + 30
while not done and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"before": before, "frozen": frozen, "exit": done[0] if done else None}))
"""


@pytest.mark.parametrize("value", ["1", "0"])
def test_the_serving_process_hides_what_it_made_while_starting_from_the_collector(value):
    """serve() freezes the objects made while starting (Settings.gc_freeze, MINICOG_GC_FREEZE):
    full collections, which walked them all, then look only at what came later."""
    import json
    import socket
    import subprocess
    import sys

    from support import ROOT, predictor

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MINICOG_GC_FREEZE": value, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _FREEZE_PROBE, predictor("http_echo.py"), str(port)], env=env,
                         capture_output=True, text=True, timeout=90)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exit"] == 0, out.stderr[-2000:]
    added = result["frozen"] - result["before"]
    assert (added > 1000) if value == "1" else (added == 0), result
