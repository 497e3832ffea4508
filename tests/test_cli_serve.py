"""``python -m minicog serve`` run as a real subprocess: reference fallback, flags, signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from support import ROOT, predictor, wait_until

TIMEOUT = 60


def test_default_model_when_nothing_is_named_then_sigterm_exits_0(serve_proc, tmp_path):
    server = serve_proc(cwd=str(tmp_path), env={"COG_PREDICT_TYPE_STUB": ""})
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
def test_positional_ref_and_predictor_flag(serve_proc):
    server = serve_proc(predictor("cli_text.py"))
    server.wait_ready()
    assert server.request("POST", "/predictions", {"input": {"name": "positional"}})[1]["output"] == "hello positional"
    server = serve_proc("--predictor", predictor("cli_text.py"))
    server.wait_ready()
    assert server.request("POST", "/predictions", {"input": {"name": "flag"}})[1]["output"] == "hello flag"


@pytest.mark.slow
def test_environment_stub_and_cog_yaml_fallbacks(serve_proc, tmp_path):
    server = serve_proc(cwd=str(tmp_path), env={"COG_PREDICT_TYPE_STUB": predictor("cli_text.py")})
    server.wait_ready()
    assert server.request("POST", "/predictions", {"input": {"name": "stub"}})[1]["output"] == "hello stub"
    server = serve_proc(cwd=os.path.join(ROOT, "examples"))
    server.wait_ready()
    out = server.request("POST", "/predictions", {"input": {"text": "ab", "transform": "reverse"}})[1]["output"]
    assert out == "ba"


@pytest.mark.parametrize("flag", [["--await-explicit-shutdown"], ["--await-explicit-shutdown", "true"]])
def test_await_explicit_shutdown_ignores_sigterm_until_post_shutdown(serve_proc, flag):
    server = serve_proc(predictor("cli_text.py"), *flag)
    server.wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: any("SIGTERM ignored" in line for line in server.lines), timeout=TIMEOUT, message="the log")
    assert server.proc.poll() is None
    assert server.request("GET", "/health-check")[1]["status"] == "READY"
    assert server.request("POST", "/shutdown")[0] == 200
    assert server.proc.wait(TIMEOUT) == 0


def test_await_explicit_shutdown_false_means_false(serve_proc):
    server = serve_proc(predictor("cli_text.py"), "--await-explicit-shutdown", "false")
    server.wait_ready()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0


def test_train_mode_and_json_logs(serve_proc):
    server = serve_proc(predictor("cli_train.py") + ":Trainer", "--x-mode", "train", "--log-format", "json")
    server.wait_ready()
    status, body = server.request("POST", "/trainings", {"input": {"steps": 2}})
    assert status == 200 and body["output"]["steps"] == 2
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(TIMEOUT) == 0
    server.thread.join(10)
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert records, "no JSON log lines"
    assert not [line for line in server.lines if line.strip() and not line.startswith("{")]


def test_max_concurrency_runs_predictions_side_by_side(serve_proc):
    server = serve_proc(predictor("cli_async.py"), "--max-concurrency", "2")
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


_GATED_ASYNC = '''\
import asyncio
import os
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    async def predict(self, gate: str) -> str:
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return "opened"
'''


def test_cog_yaml_concurrency_gives_the_command_line_server_its_slots(serve_proc, tmp_path):
    """cog.yaml ``concurrency: {max: 4}`` for an async predictor: ``serve`` runs four at once
    (it used to serve one slot: five of six concurrent requests got 409)."""
    import threading

    (tmp_path / "predict.py").write_text(_GATED_ASYNC)
    (tmp_path / "cog.yaml").write_text('predict: "predict.py:Predictor"\nconcurrency:\n  max: 4\n')
    gate = tmp_path / "gate"
    server = serve_proc(cwd=str(tmp_path), env={"COG_PREDICT_TYPE_STUB": "", "COG_MAX_CONCURRENCY": ""})
    server.wait_ready()
    results: list = []

    def one():
        results.append(server.request("POST", "/predictions", {"input": {"gate": str(gate)}}))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    # Two are refused at once; four hold their slots until the gate opens.
    wait_until(lambda: len(results) >= 2, TIMEOUT, message="two refusals")
    wait_until(lambda: server.request("GET", "/health-check")[1]["status"] == "BUSY", TIMEOUT,
               message="every slot busy")
    assert sorted(status for status, _ in results) == [409, 409]
    gate.write_text("open")
    for t in threads:
        t.join(TIMEOUT)
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 200, 200, 200, 409, 409]
    assert all(body["output"] == "opened" for status, body in results if status == 200)
    health = server.request("GET", "/health-check")[1]
    assert health["workers"][0]["slots"] == 4


def test_workers_and_gpus_flags_start_one_worker_per_device(serve_proc):
    server = serve_proc(predictor("workers_identity.py"), "--gpus", "0,1")
    server.wait_ready()
    wait_until(lambda: [w["status"] for w in server.request("GET", "/health-check")[1]["workers"]] == ["READY"] * 2,
               TIMEOUT, message="both workers ready")
    workers = server.request("GET", "/health-check")[1]["workers"]
    assert [w["device"] for w in workers] == ["0", "1"] and len({w["pid"] for w in workers}) == 2
    status, body = server.request("POST", "/predictions", {"input": {}})
    assert status == 200 and body["output"]["device"] in ("0", "1")


def test_minicog_workers_sets_the_worker_count_and_a_bad_flag_is_a_usage_error(serve_proc):
    server = serve_proc(predictor("workers_identity.py"), env={"MINICOG_WORKERS": "2"})
    server.wait_ready()
    wait_until(lambda: len(server.request("GET", "/health-check")[1]["workers"]) == 2, TIMEOUT,
               message="two workers")
    out = subprocess.run([sys.executable, "-m", "minicog", "serve", "--workers", "0", predictor("workers_identity.py")],
                         capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)
    assert out.returncode == 2 and "--workers" in out.stderr
