"""Settings: Cog's environment variables (section 16 of the reference) and their fallbacks.

The unit tests read a given mapping; the last test starts ``python -m minicog serve``
with only environment variables (no flags for port or history) and checks the
running server obeys them.
"""

import http.client
import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from minicog.settings import Settings
from support import ROOT, Receiver, predictor, wait_until


def test_defaults_match_cog():
    s = Settings.from_env({})
    assert (s.port, s.host, s.max_body_bytes) == (5000, "127.0.0.1", 100 * 1024 * 1024)
    assert (s.stream_history_capacity, s.throttle_response_interval, s.sse_keepalive_interval) == (1024, 0.5, 15.0)
    assert (s.webhook_max_retries, s.webhook_timeout, s.upload_timeout) == (12, 30.0, 25.0)
    # Cog's retry schedule: 0.1 s * 2**min(k, 10) -> 0.2 s first, 102.4 s cap.
    assert s.webhook_backoff_base * 2 ** 1 == pytest.approx(0.2)
    assert s.webhook_backoff_base * 2 ** s.webhook_backoff_max_exponent == pytest.approx(102.4)
    assert s.max_concurrency is None and s.setup_timeout is None and s.webhook_auth_token is None


def test_cog_variables_are_read():
    s = Settings.from_env({
        "PORT": "8080", "COG_MAX_CONCURRENCY": "4", "COG_SETUP_TIMEOUT": "12", "COG_THROTTLE_RESPONSE_INTERVAL": "0.25",
        "COG_STREAM_HISTORY_CAPACITY": "0", "WEBHOOK_AUTH_TOKEN": "tok", "COG_WEIGHTS": "w.bin",
        "COG_USER_AGENT": "ua/1", "COG_LOG_LEVEL": "debug", "KUBERNETES_SERVICE_HOST": "10.0.0.1",
    })
    assert (s.port, s.max_concurrency, s.setup_timeout, s.throttle_response_interval) == (8080, 4, 12.0, 0.25)
    assert (s.stream_history_capacity, s.webhook_auth_token, s.weights, s.user_agent) == (0, "tok", "w.bin", "ua/1")
    assert (s.log_level, s.kubernetes_service_host) == ("debug", "10.0.0.1")


@pytest.mark.parametrize("name,raw,field", [
    ("PORT", "eighty", "port"),
    ("PORT", "70000", "port"),
    ("COG_MAX_CONCURRENCY", "0", "max_concurrency"),
    ("COG_SETUP_TIMEOUT", "0", "setup_timeout"),  # Cog: 0 means no timeout
    ("COG_STREAM_HISTORY_CAPACITY", "-1", "stream_history_capacity"),
    ("COG_THROTTLE_RESPONSE_INTERVAL", "soon", "throttle_response_interval"),
    ("COG_LOG_LEVEL", "loud", "log_level"),
    ("MINICOG_SPIN_WAIT", "0.5", "spin_wait"),  # above 0.1 s
    ("MINICOG_SPIN_WAIT", "-0.001", "spin_wait"),
    ("MINICOG_SPIN_WAIT", "nan", "spin_wait"),
    ("MINICOG_SPIN_WAIT", "1ms", "spin_wait"),  # plain seconds only
])
def test_bad_values_fall_back_to_the_default_with_a_warning(name, raw, field, caplog):
    with caplog.at_level(logging.WARNING, logger="minicog.settings"):
        s = Settings.from_env({name: raw})
    assert getattr(s, field) == getattr(Settings(), field)
    assert name in caplog.text and repr(raw) in caplog.text


def test_empty_numeric_variable_is_ignored_and_overrides_win():
    assert Settings.from_env({"PORT": ""}).port == 5000
    assert Settings.from_env({"PORT": "8080"}, port=9000).port == 9000


@pytest.mark.parametrize("raw,expected", [("0.0005", 0.0005), ("0.1", 0.1), ("0", 0.0), (" 0.002 ", 0.002)])
def test_spin_wait_is_read_from_the_environment_and_0_is_allowed(raw, expected):
    assert Settings().spin_wait == 0.001
    assert Settings.from_env({"MINICOG_SPIN_WAIT": raw}).spin_wait == expected
    assert Settings.environment_variables()["MINICOG_SPIN_WAIT"] == "spin_wait"


def test_spin_window_is_0_when_spin_wait_is_0():
    assert Settings(spin_wait=0.0).spin_window() == 0.0


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def test_spin_window_is_spin_wait_with_two_usable_cpus_or_more():
    if _usable_cpus() < 2:
        pytest.skip("this process may use only one CPU")
    assert Settings(spin_wait=0.002).spin_window() == 0.002
    assert Settings.from_env({}).spin_window() == Settings().spin_wait


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no os.sched_setaffinity on this platform")
def test_spin_window_is_0_in_a_process_pinned_to_one_cpu():
    # A spinner would hold the only CPU its peer needs: a pinned process never spins.
    # In a subprocess, so this test process keeps its own affinity.
    script = ("import os; from minicog.settings import Settings\n"
              "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
              "print(len(os.sched_getaffinity(0)), Settings(spin_wait=0.002).spin_window())\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0.0"]


def test_every_variable_is_listed_for_help():
    names = Settings.environment_variables()
    for name in ("PORT", "COG_MAX_CONCURRENCY", "COG_SETUP_TIMEOUT", "COG_THROTTLE_RESPONSE_INTERVAL",
                 "COG_STREAM_HISTORY_CAPACITY", "WEBHOOK_AUTH_TOKEN", "COG_WEIGHTS", "COG_USER_AGENT",
                 "COG_LOG_LEVEL", "KUBERNETES_SERVICE_HOST"):
        assert name in names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_obeys_port_and_stream_history_from_the_environment():
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=ROOT, PORT=str(port), COG_STREAM_HISTORY_CAPACITY="2")
    proc = subprocess.Popen([sys.executable, "-m", "minicog", "serve", predictor("http_stream.py"), "--host", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def request(method, path, body=None, headers=None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request(method, path, body=None if body is None else json.dumps(body),
                             headers={"Content-Type": "application/json", **(headers or {})})
                r = conn.getresponse()
                return r.status, r.read()
            finally:
                conn.close()

        def ready():
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                return json.loads(request("GET", "/health-check")[1])["status"] == "READY"
            except OSError:
                return False

        wait_until(ready, timeout=30, message="the server on $PORT")
        with Receiver() as rx:
            # The first output webhook means start, log, metric and output events exist (4 > 2).
            status, _ = request("PUT", "/predictions/env1", {"input": {"n": 2, "gap": 3.0}, "webhook": rx.url + "/hook",
                                                            "webhook_events_filter": ["output"]},
                                {"Prefer": "respond-async"})
            assert status == 202
            rx.wait_for(lambda reqs: reqs)
            status, body = request("PUT", "/predictions/env1", {}, {"Accept": "text/event-stream"})
            assert request("POST", "/predictions/env1/cancel")[0] == 200  # so SIGTERM need not wait for it
        assert status == 200
        assert b"event: error" in body and b"SSE stream replay truncated; events were dropped" in body, body
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
