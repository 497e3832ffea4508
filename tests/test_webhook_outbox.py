"""Durable terminal webhooks: the outbox directory, redelivery after a restart, and a
server killed with SIGKILL between completion and delivery losing nothing."""

import base64
import json
import logging
import os
import signal
import threading

from minicog.server.outputs import FileOutput
from minicog.server.webhooks import Outbox, WebhookDispatcher
from minicog.settings import Settings
from support import Receiver, predictor, wait_until
from test_webhook_signatures import verify

SECRET = "whsec_" + base64.b64encode(b"outbox-test-key-0123456789").decode()
FAST = dict(webhook_backoff_base=0.01, webhook_timeout=3.0, throttle_response_interval=0.0)


def entries(directory) -> list[str]:
    """webhook-ids pending in the outbox (read-only scan of its segments)."""
    return sorted(m["webhook_id"] for m in Outbox.scan(str(directory)))


def segments(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(Outbox.SUFFIX))


def test_written_before_the_first_attempt_and_removed_once_delivered(tmp_path):
    seen_on_disk = []

    def responder(rec):
        # What the outbox holds while the receiver is being called.
        seen_on_disk.append(entries(tmp_path))
        return 200, {}, b""

    with Receiver(responder) as rx:
        d = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), **FAST))
        d.start()
        s = d.sender(rx.url, "p1")
        assert s.send("completed", {"id": "p1", "status": "succeeded", "output": [1, 2]})
        s.wait_durable()
        assert s.durable
        assert s.wait(5) and s.terminal_delivered is True
        assert seen_on_disk == [[s.webhook_id]]
        assert entries(tmp_path) == []
        d.close()
        assert segments(tmp_path) == []  # nothing pending: a closed outbox leaves no segment


def test_file_outputs_are_rendered_into_the_outbox_so_the_prediction_files_can_go(tmp_path):
    out = tmp_path / "o.bin"
    out.write_bytes(b"\x00\x01" * 5000)
    box = tmp_path / "box"
    released = []
    gate = threading.Event()

    def responder(rec):
        gate.wait(10)
        return 200, {}, b""

    with Receiver(responder) as rx:
        d = WebhookDispatcher(Settings(webhook_outbox=str(box), **FAST))
        d.start()
        s = d.sender(rx.url, "p1", on_finished=lambda: released.append(1))
        s.send("completed", {"id": "p1", "status": "succeeded", "output": FileOutput(str(out))})
        # Released as soon as the body is on disk, before the (held) delivery finishes.
        wait_until(lambda: released == [1], message="the record released after the outbox write")
        out.unlink()
        gate.set()
        assert s.wait(5) and s.terminal_delivered
        body = json.loads(rx.requests[0].body)
        assert body["output"] == "data:application/octet-stream;base64," + base64.b64encode(b"\x00\x01" * 5000).decode()
        d.close()


def test_a_scan_beside_a_live_outbox_never_trips_over_a_removed_segment(tmp_path):
    """Operators read the directory while the server delivers and removes segments."""
    errors, done = [], threading.Event()

    def reader():
        while not done.is_set():
            try:
                Outbox.scan(str(tmp_path))
            except Exception as exc:  # the race this test is about
                errors.append(exc)
                return

    with Receiver(lambda rec: (200, {}, b"")) as rx:
        d = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), webhook_outbox_segment_bytes=512, **FAST))
        d.start()
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        senders = []
        for i in range(60):
            s = d.sender(rx.url, f"p{i}")
            s.send("completed", {"id": f"p{i}", "status": "succeeded", "output": "x" * 200})
            senders.append(s)
        assert all(s.wait(10) and s.terminal_delivered for s in senders)
        done.set()
        t.join(10)
        d.close()
    assert errors == []
    assert entries(tmp_path) == []


def test_a_new_dispatcher_redelivers_what_the_outbox_holds_with_the_same_id(tmp_path):
    failing = threading.Event()
    failing.set()

    def responder(rec):
        return (503 if failing.is_set() else 200), {}, b""

    with Receiver(responder) as rx:
        first = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), webhook_secret=SECRET,
                                           **{**FAST, "webhook_backoff_base": 30.0}))
        first.start()
        s = first.sender(rx.url, "p-keep", headers={"traceparent": "00-1-2-01"})
        s.send("completed", {"id": "p-keep", "status": "succeeded", "output": "kept"})
        rx.wait_for(lambda rs: rs)
        first.close()  # the process "ends" with the webhook still pending
        assert entries(tmp_path) == [s.webhook_id]

        failing.clear()
        second = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), webhook_secret=SECRET, **FAST))
        assert second.start() == 1
        wait_until(lambda: not second.pending(), message="the redelivery")
        again = rx.requests[-1]
        assert again.headers["webhook-id"] == s.webhook_id
        assert again.body == rx.requests[0].body and json.loads(again.body)["output"] == "kept"
        assert again.headers["traceparent"] == "00-1-2-01"
        verify(SECRET, again.headers, again.body)
        wait_until(lambda: segments(tmp_path) == [], message="the finished segment deleted")
        second.close()


def test_gives_up_after_the_retry_schedule_naming_the_prediction_and_removes_the_entry(tmp_path, caplog):
    with Receiver(lambda rec: (502, {}, b"")) as rx:
        d = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), **{**FAST, "webhook_max_retries": 2,
                                                                        "webhook_backoff_base": 0.001}))
        d.start()
        s = d.sender(rx.url, "p-lost")
        with caplog.at_level(logging.ERROR, logger="minicog.webhooks"):
            s.send("completed", {"id": "p-lost", "status": "failed"})
            assert s.wait(10) and s.terminal_delivered is False
        assert len(rx.requests) == 3
        assert "p-lost" in caplog.text and "given up" in caplog.text
        assert entries(tmp_path) == []
        d.close()


def test_a_record_cut_short_is_ignored_and_a_directory_serves_one_process(tmp_path, caplog):
    failing = threading.Event()
    failing.set()
    with Receiver(lambda rec: ((503 if failing.is_set() else 200), {}, b"")) as rx:
        first = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), **{**FAST, "webhook_backoff_base": 30.0}))
        first.start()
        kept, cut = first.sender(rx.url, "p-kept"), first.sender(rx.url, "p-cut")
        kept.send("completed", {"id": "p-kept", "status": "succeeded"})
        cut.send("completed", {"id": "p-cut", "status": "succeeded", "output": "y" * 1000})
        kept.wait_durable()
        cut.wait_durable()
        # A second process is refused while the first holds the directory.
        second = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), **FAST))
        with caplog.at_level(logging.ERROR, logger="minicog.webhooks"):
            second.start()
        assert second.outbox is None and "in use by another process" in caplog.text
        second.close()
        first.close()
        (path,) = [tmp_path / n for n in segments(tmp_path) if b"p-cut" in (tmp_path / n).read_bytes()]
        path.write_bytes(path.read_bytes()[:-10])  # the last record's write was cut short by a crash
        assert entries(tmp_path) == [kept.webhook_id]

        failing.clear()
        seen = len(rx.requests)
        third = WebhookDispatcher(Settings(webhook_outbox=str(tmp_path), **FAST))
        with caplog.at_level(logging.WARNING, logger="minicog.webhooks"):
            assert third.start() == 1
        assert "unfinished record" in caplog.text
        wait_until(lambda: not third.pending(), message="the redelivery")
        assert [r.headers["webhook-id"] for r in rx.requests[seen:]] == [kept.webhook_id]
        third.close()


def test_sigkill_between_completion_and_delivery_loses_nothing(tmp_path, serve_proc):
    """Sync predictions answered, receiver down, SIGKILL; a restart delivers every terminal webhook once more."""
    box = tmp_path / "outbox"
    accepting = threading.Event()
    delivered: dict = {}

    def responder(rec):
        doc = json.loads(rec.body)
        if not accepting.is_set():
            return 503, {}, b""
        if doc["status"] in ("succeeded", "failed", "canceled"):
            delivered.setdefault(doc["id"], []).append(rec)
        return 200, {}, b""

    env = {"MINICOG_WEBHOOK_OUTBOX": str(box), "MINICOG_WEBHOOK_SECRET": SECRET,
           "MINICOG_WEBHOOK_BACKOFF_BASE": "60", "COG_THROTTLE_RESPONSE_INTERVAL": "0"}
    with Receiver(responder) as rx:
        first = serve_proc(predictor("http_echo.py"), env=env)
        first.wait_ready()
        ids = [f"durable-{i}" for i in range(6)]
        first_attempt_ids = {}
        for pid in ids:
            status, body = first.request("PUT", f"/predictions/{pid}", {"input": {"text": pid[-1]}, "webhook": rx.url,
                                                                         "webhook_events_filter": ["completed"]})
            assert status == 200 and body["status"] == "succeeded"
        # Each answered prediction's webhook is on disk now, whatever its delivery is doing.
        on_disk = entries(box)
        assert len(on_disk) == len(ids)
        assert sorted(m["prediction_id"] for m in Outbox.scan(str(box))) == ids
        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait(10)
        for rec in rx.requests:
            first_attempt_ids[json.loads(rec.body)["id"]] = rec.headers["webhook-id"]
        assert entries(box) == on_disk  # the kill lost nothing

        accepting.set()
        second = serve_proc(predictor("http_echo.py"), env={**env, "MINICOG_WEBHOOK_BACKOFF_BASE": "0.01"})
        second.wait_line(r"redelivering 6 terminal webhook")
        wait_until(lambda: len(delivered) == len(ids), timeout=30, message="all webhooks redelivered")
        wait_until(lambda: entries(box) == [] and segments(box) == [], message="the outbox emptied")
        # Delivery is at least once: a request the first server sent just before the kill can
        # reach this receiver's handler after accepting is set (the sender is dead, so it is
        # redelivered).  Every copy must carry the outbox's webhook-id and a valid signature,
        # which is what lets a receiver deduplicate.
        for pid in ids:
            recs = delivered[pid]
            assert len({rec.headers["webhook-id"] for rec in recs}) == 1
            for rec in recs:
                verify(SECRET, rec.headers, rec.body)
                assert json.loads(rec.body)["output"] == pid[-1]
                if pid in first_attempt_ids:  # a receiver can deduplicate against the first attempt
                    assert rec.headers["webhook-id"] == first_attempt_ids[pid]
        assert sorted({rec.headers["webhook-id"] for recs in delivered.values() for rec in recs}) == on_disk
