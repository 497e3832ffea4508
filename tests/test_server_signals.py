"""The real `python -m minicog serve` process: SIGTERM drain, --await-explicit-shutdown, JSON logs."""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading

import pytest

from http_helpers import call, wait_until
from support import ROOT, predictor


class ServeProcess:
    def __init__(self, *args, env=None, new_session=False):
        environ = {**os.environ, "MINICOG_SHUTDOWN_GRACE_PERIOD": "5", **(env or {})}
        environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-m", "minicog", "serve", "--host", "127.0.0.1", "--port", "0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environ, cwd=ROOT,
                                     start_new_session=new_session)
        self.lines: list[str] = []
        self._q: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = None
        m = self.wait_line(r"on http://127\.0\.0\.1:(\d+)")
        self.port = int(m.group(1))

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            self._q.put(line)

    def wait_line(self, pattern, timeout=30):
        rx = re.compile(pattern)
        for line in list(self.lines):
            if m := rx.search(line):
                return m
        while True:
            try:
                line = self._q.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; saw: {self.lines[-20:]}")
            if m := rx.search(line):
                return m

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def serve_proc():
    procs = []

    def start(*args, **kw):
        p = ServeProcess(*args, **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.close()


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
