"""What an operator sees on a ``serve`` console: setup output, prediction lines, one line per end.

Real ``python -m minicog serve`` subprocesses; their stderr is the console.
Text and ``--log-format json`` carry the same facts; secrets (a ``Secret``
input, the webhook token and a token in a webhook URL) never appear, even at
``COG_LOG_LEVEL=debug``.
"""

from __future__ import annotations

import json
import re
import socket

import pytest

from support import Receiver, predictor, wait_until

TIMEOUT = 60
SECRET = "sk-live-0123456789abcdef"


def _status(recorded) -> str | None:
    """The status a webhook carried (None if its body is not a JSON object)."""
    try:
        return recorded.json().get("status")
    except (ValueError, AttributeError):
        return None


def _current_status(server, pid: str) -> str | None:
    """The prediction's status, or None if this poll got no JSON answer (a loaded machine)."""
    try:
        return (server.request("GET", f"/predictions/{pid}")[1] or {}).get("status")
    except ValueError:  # JSONDecodeError: seen once in a full run; the next poll decides
        return None


def _predict(server, pid: str, body: dict) -> dict:
    status, out = server.request("PUT", f"/predictions/{pid}", body)
    assert status == 200, out
    return out


def test_text_console_shows_setup_prediction_lines_and_one_line_per_end(serve_proc):
    server = serve_proc(predictor("console_chatty.py"))
    server.wait_ready()
    server.wait_line(r"INFO minicog\.setup: console_chatty: loading weights$")
    server.wait_line(r"INFO minicog\.setup: console_chatty: setup done$")
    assert _predict(server, "ok-1", {"input": {"text": "abc"}})["output"] == "ABC"
    server.wait_line(r"INFO minicog\.prediction: \[ok-1\] console_chatty: working on abc$")
    m = server.wait_line(r"INFO minicog\.prediction: prediction ok-1 succeeded in (\d+\.\d{3})s$")
    assert float(m.group(1)) >= 0
    assert _predict(server, "bad-1", {"input": {"text": "xyz", "fail": True}})["status"] == "failed"
    server.wait_line(r"INFO minicog\.prediction: prediction bad-1 failed in \d+\.\d{3}s: "
                     r"Prediction failed: RuntimeError: model gave up on xyz$")
    # The traceback is the prediction's log, so it is on the console with the id too.
    server.wait_line(r"\[bad-1\] RuntimeError: model gave up on xyz$")
    assert sum(1 for line in server.lines if re.search(r"prediction ok-1 succeeded", line)) == 1


def test_json_console_carries_the_same_as_fields(serve_proc):
    server = serve_proc(predictor("console_chatty.py"), "--log-format", "json")
    server.wait_ready()
    _predict(server, "j-1", {"input": {"text": "q"}})
    _predict(server, "j-2", {"input": {"text": "r", "fail": True}})

    def docs():
        return [json.loads(line) for line in list(server.lines) if line.startswith("{")]

    def find(pred):
        return next((d for d in docs() if pred(d)), None)

    setup = wait_until(lambda: find(lambda d: d.get("logger") == "minicog.setup"), TIMEOUT, message="a setup record")
    assert setup["message"] == "console_chatty: loading weights" and setup["source"] == "stdout"
    line = wait_until(lambda: find(lambda d: d.get("prediction_id") == "j-1" and "source" in d), TIMEOUT,
                      message="a prediction log record")
    assert line["message"] == "console_chatty: working on q" and line["level"] == "INFO"
    end = wait_until(lambda: find(lambda d: d.get("prediction_id") == "j-1" and "status" in d), TIMEOUT,
                     message="the finished record")
    assert end["status"] == "succeeded" and end["kind"] == "prediction" and end["predict_time"] > 0
    assert "error" not in end
    failed = wait_until(lambda: find(lambda d: d.get("prediction_id") == "j-2" and "status" in d), TIMEOUT,
                        message="the failed record")
    assert failed["status"] == "failed" and failed["error"] == "Prediction failed: RuntimeError: model gave up on r"
    assert all(not line.strip() or line.startswith("{") for line in server.lines), "every console line is JSON"


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.slow
def test_secrets_never_reach_the_console(serve_proc, log_format):
    token = "whsec-TOKEN-9876"
    with Receiver(lambda r: (500, {}, b"try later")) as hook:  # every webhook fails: errors get logged
        server = serve_proc(predictor("console_chatty.py"), "--log-format", log_format,
                            env={"COG_LOG_LEVEL": "debug", "WEBHOOK_AUTH_TOKEN": token,
                                 "MINICOG_SHUTDOWN_GRACE_PERIOD": "1"})
        server.wait_ready()
        # One webhook reaches the receiver (which fails it), one cannot even be sent (nothing
        # listens on its port); both are logged, the second with its URL's credentials.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        for pid, url in (("s-1", f"{hook.url}/hook?token={SECRET}-url"),
                         ("s-2", f"http://ops:pa55word@127.0.0.1:{closed_port}/hook")):
            status, body = server.request("PUT", f"/predictions/{pid}",
                                          {"input": {"text": "s", "api_key": SECRET}, "webhook": url},
                                          headers={"Prefer": "respond-async"})
            assert status == 202, body
            wait_until(lambda: _current_status(server, pid) == "succeeded", TIMEOUT,
                       message="the prediction to end")  # one slot: the next waits for this one
        hook.wait_for(lambda reqs: any(_status(r) == "succeeded" for r in reqs), timeout=TIMEOUT)
        server.wait_line(r"terminal webhook for prediction s-1 answered 500")
        server.wait_line(r"terminal webhook for prediction s-2 to http://127\.0\.0\.1:\d+/hook failed")
        server.proc.terminate()
        server.proc.wait(TIMEOUT)
        server.thread.join(TIMEOUT)
    console = "\n".join(server.lines)
    for secret in (SECRET, token, "pa55word"):
        assert secret not in console, f"{secret!r} leaked to the console"
    assert "/hook?..." in console  # the URL is shown, without its query string
