"""The Prediction record driven through its listener protocol (as the orchestrator drives it)."""

import datetime
import json
import logging
import threading
import time

import pytest

from minicog.server.outputs import FileOutput, Uploader, render_json
from minicog.server.prediction import Prediction
from minicog.server.sse import EventStream
from minicog.server.webhooks import WebhookDispatcher
from minicog.settings import Settings
from support import Receiver, wait_until


def events_of(stream):
    sub = stream.subscribe()
    out = []
    while True:
        ev = sub.get(2)
        if ev is None:
            return out
        out.append(ev)


def test_state_machine_timestamps_and_events():
    stream = EventStream()
    p = Prediction("p1", {"x": 1}, events=stream)
    assert p.snapshot()["status"] == "starting"
    p.started()
    p.log("stdout", "hello\n")
    p.output(0, "a")
    p.metric("tokens", 2, "increment")
    p.succeeded(is_stream=False)
    p.failed("late")  # terminal is sticky
    snap = p.snapshot()
    assert snap["status"] == "succeeded" and snap["output"] == "a" and snap["logs"] == "hello\n"
    assert "error" not in snap
    assert snap["metrics"]["tokens"] == 2 and snap["metrics"]["predict_time"] >= 0
    for key in ("created_at", "started_at", "completed_at"):
        t = datetime.datetime.fromisoformat(snap[key])
        assert t.utcoffset() == datetime.timedelta(0)
    assert snap["created_at"] <= snap["started_at"] <= snap["completed_at"]
    names = [e.name for e in events_of(stream)]
    assert names == ["start", "log", "output", "metric", "completed"]
    assert p.snapshot(with_input=True)["input"] == {"x": 1}


@pytest.mark.parametrize("items,stream_output,is_stream,expected", [
    ([], False, False, None),
    ([], True, False, []),
    ([], False, True, []),
    (["only"], False, True, ["only"]),
    (["only"], False, False, "only"),
    ([1, 2], False, False, [1, 2]),
])
def test_output_wrapping(items, stream_output, is_stream, expected):
    p = Prediction("p", {}, stream_output=stream_output)
    p.started()
    for i, v in enumerate(items):
        p.output(i, v)
    p.succeeded(is_stream)
    assert p.snapshot()["output"] == expected


def test_failed_and_canceled_keep_logs_and_metrics():
    p = Prediction("p", {})
    p.started()
    p.log("stderr", "oops\n")
    p.metric("a.b", 1, "replace")
    p.failed("Prediction failed: ValueError: boom")
    s = p.snapshot()
    assert s["status"] == "failed" and s["error"] == "Prediction failed: ValueError: boom"
    assert s["logs"] == "oops\n" and s["metrics"]["a"] == {"b": 1} and "output" not in s

    q = Prediction("q", {})
    q.started()
    q.log("stdout", "x\n")
    q.canceled()
    s = q.snapshot()
    assert s["status"] == "canceled" and s["logs"] == "x\n" and "output" not in s and "predict_time" in s["metrics"]


def test_cancel_requested_then_success_is_canceled_with_output():
    p = Prediction("p", {})
    p.started()
    p.output(0, "v")
    p.request_cancel()
    p.succeeded(False)
    s = p.snapshot()
    assert s["status"] == "canceled" and s["output"] == "v"


def test_nonterminal_snapshot_output_is_items_so_far():
    p = Prediction("p", {})
    p.started()
    p.output(0, "a")
    assert p.snapshot()["output"] == ["a"]


def test_file_output_is_lazy_and_released_after_consumers(tmp_path):
    f = tmp_path / "out.txt"
    f.write_bytes(b"hello file")
    released = []
    p = Prediction("p", {}, on_release=lambda pred: released.append(pred.id))
    p.started()
    p.file_output(0, str(f), None)
    assert p.retain()  # a response writer
    p.succeeded(False)
    assert released == []
    out = p.snapshot()["output"]
    assert isinstance(out, FileOutput)
    body = render_json(p.snapshot())
    assert json.loads(body.materialize())["output"] == "data:text/plain;base64,aGVsbG8gZmlsZQ=="
    p.release()
    assert released == ["p"]
    assert not p.retain()


def test_uploads_keep_order_even_when_finishing_out_of_order(tmp_path):
    gate = threading.Event()

    def responder(rec):
        if rec.path.endswith("/o0.txt"):
            gate.wait(5)  # the first file finishes last
        return 200, {"Location": f"http://files.example{rec.path}?sig=1"}, b""

    paths = []
    for i in range(4):
        f = tmp_path / f"o{i}.txt"
        f.write_text(str(i))
        paths.append(str(f))
    with Receiver(responder) as rx:
        up = Uploader(rx.url + "/up", timeout=5)
        stream = EventStream()
        p = Prediction("p", {}, uploader=up, events=stream)
        sub = stream.subscribe()
        p.started()
        for i, path in enumerate(paths):
            p.file_output(i, path, None)
        p.output(4, "tail")
        p.succeeded(True)
        rx.wait_for(lambda rs: len(rs) == 3)
        assert not p.is_terminal  # waits for the outstanding upload
        gate.set()
        assert p.wait(5)
        assert p.snapshot()["output"] == [f"http://files.example/up/o{i}.txt" for i in range(4)] + ["tail"]
        outputs = []
        while True:
            ev = sub.get(2)
            if ev is None:
                break
            if ev.name == "output":
                outputs.append(ev.data["index"])
        assert outputs == [0, 1, 2, 3, 4]
        headers = {r.path: r.headers for r in rx.requests}
        assert headers["/up/o1.txt"]["x-prediction-id"] == "p"
        up.close()


def test_upload_failure_fails_prediction_and_asks_cancel(tmp_path):
    f = tmp_path / "x.png"
    f.write_bytes(b"png")
    cancels = []
    with Receiver(lambda rec: (500, {}, b"")) as rx:
        up = Uploader(rx.url, timeout=5)
        p = Prediction("p", {}, uploader=up, on_cancel=lambda: cancels.append(1))
        p.started()
        p.file_output(0, str(f), None)
        wait_until(lambda: cancels, message="cancel after upload failure")
        p.canceled()  # the orchestrator reports the worker side
        s = p.snapshot()
        assert s["status"] == "failed"
        assert s["error"] == "Failed to upload output: upload returned status 500 Internal Server Error"
        up.close()


def test_webhooks_from_transitions():
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(throttle_response_interval=0.0, webhook_backoff_base=0.01))
        p = Prediction("p", {})
        p.webhook = d.sender(rx.url, "p")
        p.started()
        rx.wait_for(lambda rs: len(rs) == 1)
        p.output(0, "a")
        rx.wait_for(lambda rs: len(rs) == 2)
        p.succeeded(False)
        p.webhook.wait(5)
        bodies = [r.json() for r in rx.requests]
        assert [b["status"] for b in bodies] == ["processing", "processing", "succeeded"]
        assert bodies[0]["logs"] == "" and bodies[1]["output"] == ["a"] and bodies[2]["output"] == "a"
        assert "input" not in bodies[2]


def test_filtered_terminal_webhook_releases_without_deadlock(tmp_path):
    released = []
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(throttle_response_interval=0.0))
        p = Prediction("p", {}, on_release=lambda pred: released.append(pred.id))
        p.retain()
        p.webhook = d.sender(rx.url, "p", events_filter=["start"], on_finished=p.release)
        p.started()
        done = threading.Thread(target=p.succeeded, args=(False,), daemon=True)
        done.start()
        done.join(5)
        assert not done.is_alive(), "terminal transition deadlocked"
        assert released == ["p"]
        rx.wait_for(lambda rs: len(rs) == 1)
        assert rx.requests[0].json()["status"] == "processing"


class _Lines(logging.Handler):
    """The console lines of minicog.prediction, as the operator's console would get them."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def finished_lines():
    logger = logging.getLogger("minicog.prediction")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_deferred_end_work_is_done_once_after_the_answer(finished_lines):
    """A sync answer goes first; the console line, the done callbacks and on_terminal
    (metrics) follow it, once, and before the answering thread releases the record."""
    done, terminal = [], []
    p = Prediction("held-1", {}, on_terminal=terminal.append)
    p.add_done_callback(done.append)
    p.defer_end_work()
    p.started()
    p.succeeded(is_stream=False)
    assert p.is_terminal and p.wait(0)  # the answer can be written now
    assert not [l for l in finished_lines if "held-1" in l] and done == [] and terminal == []  # held
    late = []
    p.add_done_callback(late.append)  # added once terminal: called at once, as always
    assert late == [p]
    p.end_work_now()
    p.end_work_now()  # nothing left to do
    assert [l for l in finished_lines if "held-1" in l] == [f"prediction held-1 succeeded in {p.metrics['predict_time']:.3f}s"]
    assert done == [p] and terminal == [p]


def test_end_work_after_the_deferral_ended_is_done_by_the_end(finished_lines):
    done = []
    p = Prediction("held-2", {}, on_terminal=done.append)
    p.defer_end_work()
    p.started()
    p.end_work_now()  # the waiter gave up before the end: nothing held yet
    assert not [l for l in finished_lines if "held-2" in l] and done == []
    p.failed("boom")
    assert [l for l in finished_lines if "held-2" in l] == [
        f"prediction held-2 failed in {p.metrics['predict_time']:.3f}s: boom"]
    assert done == [p]


def test_has_output_turns_true_with_the_first_published_item():
    # What an SSE request waits for before its head leaves (one write with the first token).
    p = Prediction("p-has-output", {}, events=EventStream())
    p.started()
    assert not p.has_output
    p.output(0, "t0 ")
    assert p.has_output
    p.succeeded(is_stream=True)
    assert p.has_output and p.snapshot()["output"] == ["t0 "]


def test_utc_now_is_iso_8601_utc_with_microseconds_and_keeps_time():
    # The second's text is cached: across second boundaries it must still move on.
    from minicog.server.prediction import utc_now

    seen = set()
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline and len(seen) < 3:
        before = datetime.datetime.now(datetime.timezone.utc)
        stamp = utc_now()
        after = datetime.datetime.now(datetime.timezone.utc)
        parsed = datetime.datetime.fromisoformat(stamp)
        assert stamp.endswith("+00:00") and len(stamp) == len("2024-05-01T12:00:00.123456+00:00")
        assert before - datetime.timedelta(microseconds=1) <= parsed <= after + datetime.timedelta(microseconds=1)
        seen.add(stamp[:19])
        threading.Event().wait(0.05)
    assert len(seen) >= 3


@pytest.mark.parametrize("value", [
    {}, "plain", 3, None, [1, 2.5, -0.0, 1e300, True, None],
    {"id": "p", "output": {"text": "h\u00e9llo \u2028 \"quoted\" \\ \n", "n": [1, {"deep": [[]]}]}, "logs": ""},
    {1: "int key", 2.5: "float key", None: "null key", True: "bool key"},
])
def test_bodies_are_encoded_as_compact_json_would_encode_them(value):
    """Every body goes through outputs.dumps (one C encoder made once): same text as the
    compact encoder it stands for, non-ASCII kept."""
    from minicog.encoding import COMPACT_JSON
    from minicog.server.outputs import dumps

    assert dumps(value) == COMPACT_JSON.encode(value)
    assert render_json(value).materialize() == COMPACT_JSON.encode(value).encode("utf-8")


def test_a_body_that_is_not_json_is_refused_as_the_encoder_would():
    from minicog.server.outputs import dumps

    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps({"metrics": {"x": float("nan")}})
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"output": object()})
