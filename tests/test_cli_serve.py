"""``python -m minicog serve`` run as a real subprocess: reference fallback, flags, signals."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from support import ROOT, predictor, wait_until

TIMEOUT = 60


class Server:
    """A ``minicog serve`` subprocess on 127.0.0.1, port 0; the port is read from its log."""

    def __init__(self, *args: str, cwd: str = ROOT, env: dict | None = None):
        full_env = dict(os.environ, **(env or {}))
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.pop("PORT", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minicog", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.port = 0

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_listening(self) -> int:
        def port():
            for line in self.lines:
                m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
                if m:
                    return int(m.group(1))
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {''.join(self.lines)}")
            return 0
        self.port = wait_until(port, timeout=TIMEOUT, message="the server to log its address")
        return self.port

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            data = None if body is None else json.dumps(body)
            hdrs = {"Content-Type": "application/json"} if body is not None else {}
            hdrs.update(headers or {})
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
        finally:
            conn.close()

    def wait_ready(self) -> dict:
        self.wait_listening()

        def ready():
            health = self.request("GET", "/health-check")[1]
            assert health["status"] in ("STARTING", "READY"), health
            return health if health["status"] == "READY" else None

        return wait_until(ready, timeout=TIMEOUT, message="READY")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def server_factory():
    servers = []

    def make(*args, **kw) -> Server:
        s = Server(*args, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_default_model_when_nothing_is_named_then_sigterm_exits_0(server_factory, tmp_path):
    server = server_factory(cwd=str(tmp_path), env={"COG_PREDICT_TYPE_STUB": ""})
    server.wait_ready()
    # The log says where it listens (read by wait_listening) and when the model is ready.
    wait_until(lambda: any(re.search(r"\bready: setup succeeded in [0-9.]+s", line) for line in server.lines), TIMEOUT,
               message="the ready log line")
    status, body = server.request("POST", "/predictions", {"input": {"prompt": "The", "seed": 2, "max_tokens": 4}})
    assert status == 200 and body["status"] == "succeeded"
    assert len(body["output"]) == 4  # the default model streams word tokens
    status, body = server.request("POST", "/predictions", {"input": {"max_tokens": 0}})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "input", "max_tokens"]
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0


@pytest.mark.slow
def test_positional_ref_and_predictor_flag(server_factory):
    server = server_factory(predictor("cli_text.py"))
    server.wait_ready()
    assert server.request("POST", "/predictions", {"input": {"name": "positional"}})[1]["output"] == "hello positional"
    server = server_factory("--predictor", predictor("cli_text.py"))
    server.wait_ready()
    assert server.request("POST", "/predictions", {"input": {"name": "flag"}})[1]["output"] == "hello flag"


@pytest.mark.slow
def test_environment_stub_and_cog_yaml_fallbacks(server_factory, tmp_path):
    server = server_factory(cwd=str(tmp_path), env={"COG_PREDICT_TYPE_STUB": predictor("cli_text.py")})
    server.wait_ready()
    assert server.request("POST", "/predictions", {"input": {"name": "stub"}})[1]["output"] == "hello stub"
    server = server_factory(cwd=os.path.join(ROOT, "examples"))
    server.wait_ready()
    out = server.request("POST", "/predictions", {"input": {"text": "ab", "transform": "reverse"}})[1]["output"]
    assert out == "ba"


@pytest.mark.parametrize("flag", [["--await-explicit-shutdown"], ["--await-explicit-shutdown", "true"]])
def test_await_explicit_shutdown_ignores_sigterm_until_post_shutdown(server_factory, flag):
    server = server_factory(predictor("cli_text.py"), *flag)
    server.wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: any("SIGTERM ignored" in line for line in server.lines), timeout=TIMEOUT, message="the log")
    assert server.proc.poll() is None
    assert server.request("GET", "/health-check")[1]["status"] == "READY"
    assert server.request("POST", "/shutdown")[0] == 200
    assert server.proc.wait(TIMEOUT) == 0


def test_await_explicit_shutdown_false_means_false(server_factory):
    server = server_factory(predictor("cli_text.py"), "--await-explicit-shutdown", "false")
    server.wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0


def test_train_mode_and_json_logs(server_factory):
    server = server_factory(predictor("cli_train.py") + ":Trainer", "--x-mode", "train", "--log-format", "json")
    server.wait_ready()
    status, body = server.request("POST", "/trainings", {"input": {"steps": 2}})
    assert status == 200 and body["output"]["steps"] == 2
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(TIMEOUT) == 0
    server.thread.join(10)
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert records, "no JSON log lines"
    assert not [line for line in server.lines if line.strip() and not line.startswith("{")]


def test_max_concurrency_runs_predictions_side_by_side(server_factory):
    server = server_factory(predictor("cli_async.py"), "--max-concurrency", "2")
    server.wait_ready()
    for pid in ("a", "b"):
        status, _ = server.request("PUT", f"/predictions/{pid}", {"input": {"seconds": 60}},
                                   headers={"Prefer": "respond-async"})
        assert status == 202
    # Both run at once: a third is refused with 409 while two slots are busy.
    status, body = server.request("POST", "/predictions", {"input": {"seconds": 0}})
    assert status == 409
    for pid in ("a", "b"):
        assert server.request("POST", f"/predictions/{pid}/cancel")[0] == 200


def test_train_mode_with_nothing_to_train_exits_1(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("COG_TRAIN_TYPE_STUB", None)
    env.pop("COG_PREDICT_TYPE_STUB", None)
    proc = subprocess.run([sys.executable, "-m", "minicog", "serve", "--x-mode", "train", "--port", "0"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1
    assert "COG_TRAIN_TYPE_STUB" in proc.stderr and "Traceback" not in proc.stderr
