"""Webhook delivery against a real loopback receiver: filter, throttle, retry, headers, shutdown flush."""

import base64
import time

import pytest

from minicog.server.webhooks import USER_AGENT, WebhookDispatcher
from minicog.settings import Settings
from support import Receiver, wait_until

FAST = dict(webhook_backoff_base=0.01, webhook_timeout=2.0, throttle_response_interval=0.5)


def snap(status="processing", **kw):
    return {"id": "p1", "status": status, "logs": "", "metrics": {}, **kw}


def test_terminal_payload_headers_and_release():
    released = []
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(webhook_auth_token="tok", **FAST))
        s = d.sender(rx.url + "/hook", "p1", headers={"traceparent": "00-abc-def-01", "tracestate": "k=v"},
                     on_finished=lambda: released.append(1))
        assert s.send("completed", snap("succeeded", output=1))
        assert s.wait(5) and s.terminal_delivered is True
        r = rx.requests[0]
        assert r.method == "POST" and r.path == "/hook"
        assert r.json() == snap("succeeded", output=1)
        assert r.headers["authorization"] == "Bearer tok"
        assert r.headers["content-type"] == "application/json"
        assert r.headers["user-agent"] == USER_AGENT
        assert r.headers["traceparent"] == "00-abc-def-01" and r.headers["tracestate"] == "k=v"
        assert released == [1]
        assert d.pending() == []


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_logged(caplog):
    # urllib alone would take "user:p%40ss@127.0.0.1" for the host name and never connect.
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(webhook_auth_token="tok", **FAST))
        url = rx.url.replace("http://", "http://hook%20user:p%40ss@") + "/hook?x=1"
        s = d.sender(url, "p1")
        assert s.send("completed", snap("succeeded"))
        assert s.wait(5) and s.terminal_delivered is True
        r = rx.requests[0]
        assert r.path == "/hook?x=1"
        # The URL's own credentials win over the server-wide bearer token.
        assert r.headers["authorization"] == "Basic " + base64.b64encode(b"hook user:p@ss").decode()
    with Receiver(lambda rec: (503, {}, b"")) as rx:
        d = WebhookDispatcher(Settings(**{**FAST, "webhook_max_retries": 1}))
        s = d.sender(rx.url.replace("http://", "http://u:sekrit@"), "p2")
        with caplog.at_level("WARNING"):
            s.send("completed", snap("succeeded"))
            assert s.wait(5) and s.terminal_delivered is False
        assert len(rx.requests) >= 1 and "sekrit" not in caplog.text


def test_filter_and_throttle():
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(**FAST))
        s = d.sender(rx.url, "p1", events_filter=["start", "logs", "completed"])
        assert s.send("start", snap()) is True
        assert s.send("logs", snap(logs="a")) is False  # within 0.5 s of the last send: dropped
        assert s.send("output", snap(output=[1])) is False  # filtered out
        assert s.send("completed", snap("succeeded")) is True
        s.wait(5)
        rx.wait_for(lambda rs: len(rs) == 2)
        assert [r.json()["status"] for r in rx.requests] == ["processing", "succeeded"]


def test_output_is_never_throttled_and_resets_timer():
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(**{**FAST, "throttle_response_interval": 0.2}))
        s = d.sender(rx.url, "p1")
        assert s.send("output", snap(output=[1]))
        assert s.send("output", snap(output=[1, 2]))
        assert s.send("logs", snap(logs="x")) is False
        time.sleep(0.25)  # the throttle is about elapsed time; this is the interval under test
        assert s.send("logs", lambda: snap(logs="x"))
        rx.wait_for(lambda rs: len(rs) == 3)
        s.send("completed", snap("succeeded", output=[1, 2]))
        s.wait(5)
        rx.wait_for(lambda rs: len(rs) == 4)
        assert [r.json().get("output") for r in rx.requests[:2]] == [[1], [1, 2]]


def test_terminal_retried_on_5xx_with_backoff_then_delivered():
    answers = [503, 500, 429, 200]

    def responder(rec):
        return answers.pop(0), {}, b""

    with Receiver(responder) as rx:
        d = WebhookDispatcher(Settings(**FAST))
        s = d.sender(rx.url, "p1")
        s.send("completed", snap("failed", error="x"))
        assert s.wait(10) and s.terminal_delivered is True
        times = [r.at for r in rx.requests]
        assert len(times) == 4
        gaps = [b - a for a, b in zip(times, times[1:])]
        # backoff before retry k is base * 2**k: 0.02, 0.04, 0.08
        for gap, expected in zip(gaps, (0.02, 0.04, 0.08)):
            assert gap >= expected * 0.9


def test_terminal_not_retried_on_400_and_gives_up_after_max_retries():
    with Receiver(lambda rec: (400, {}, b"")) as rx:
        d = WebhookDispatcher(Settings(**FAST))
        s = d.sender(rx.url, "p1")
        s.send("completed", snap("succeeded"))
        assert s.wait(5) and s.terminal_delivered is False
        assert len(rx.requests) == 1
    with Receiver(lambda rec: (502, {}, b"")) as rx:
        d = WebhookDispatcher(Settings(**{**FAST, "webhook_max_retries": 3, "webhook_backoff_base": 0.001}))
        s = d.sender(rx.url, "p1")
        s.send("completed", snap("succeeded"))
        assert s.wait(5) and s.terminal_delivered is False
        assert len(rx.requests) == 4


def test_connection_refused_is_retried_and_flush_reports_undelivered(caplog):
    with Receiver() as rx:
        dead = rx.url
    d = WebhookDispatcher(Settings(**{**FAST, "webhook_backoff_base": 0.5}))
    s = d.sender(dead, "p-dead")
    s.send("completed", snap("succeeded"))
    assert d.pending() == [s]
    with caplog.at_level("ERROR", logger="minicog.webhooks"):
        left = d.flush(0.2)
    assert left == [s]
    assert "p-dead" in caplog.text and "not delivered" in caplog.text
    d.close()


def test_terminal_drops_queued_non_terminal_backlog():
    import threading
    gate = threading.Event()

    def responder(rec):
        if rec.json()["status"] == "processing":
            gate.wait(5)
        return 200, {}, b""

    with Receiver(responder) as rx:
        d = WebhookDispatcher(Settings(**FAST))
        s = d.sender(rx.url, "p1")
        for i in range(20):
            s.send("output", snap(output=list(range(i + 1))))
        s.send("completed", snap("succeeded", output=list(range(20))))
        gate.set()
        assert s.wait(5)
        statuses = [r.json()["status"] for r in rx.requests]
        assert statuses[-1] == "succeeded"
        assert len(statuses) < 21  # the waiting output events were superseded


def test_file_outputs_are_streamed_into_the_webhook_body(tmp_path):
    from minicog.server.outputs import FileOutput
    f = tmp_path / "out.png"
    f.write_bytes(b"\x89PNG" * 1000)
    with Receiver() as rx:
        d = WebhookDispatcher(Settings(**FAST))
        s = d.sender(rx.url, "p1")
        s.send("completed", snap("succeeded", output=[FileOutput(str(f))]))
        assert s.wait(5) and s.terminal_delivered
        import base64
        assert rx.requests[0].json()["output"] == ["data:image/png;base64," + base64.b64encode(f.read_bytes()).decode()]


@pytest.mark.parametrize("url", ["file:///dev/zero", "data:,hello", "ftp://127.0.0.1:9/x", "not a url"])
def test_only_http_urls_are_posted_and_others_are_given_up_at_once(url, caplog):
    # A client-chosen file:///dev/zero must not make the server read forever (nor be retried).
    released = []
    # A retry would wait the 10 s backoff first: ending well before it means none happened,
    # with room for a loaded machine.
    d = WebhookDispatcher(Settings(**{**FAST, "webhook_backoff_base": 10.0}))
    s = d.sender(url, "p1", on_finished=lambda: released.append(1))
    s.send("start", snap())
    t0 = time.monotonic()
    assert s.send("completed", snap("succeeded"))
    assert s.wait(8), "the sender must give up on a non-http(s) URL without retrying"
    assert time.monotonic() - t0 < 8
    assert s.terminal_delivered is False and released == [1] and d.pending() == []
    assert "http" in caplog.text and "not retried" in caplog.text


def test_an_endless_response_body_is_not_read_to_the_end():
    # The receiver answers 200 with a 1 GB Content-Length, sends a little and then stalls: the
    # sender reads at most webhook_max_response_bytes and moves on, well inside its timeout.
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(5)
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + b"x" * 200000)
            stop.wait(10)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        d = WebhookDispatcher(Settings(**{**FAST, "webhook_timeout": 3.0}))
        s = d.sender(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", "p1")
        assert s.send("completed", snap("succeeded"))
        assert s.wait(2) and s.terminal_delivered is True
    finally:
        stop.set()
        listener.close()


def test_a_slow_receiver_cannot_grow_the_queue_beyond_the_limit():
    import threading

    release, arrived = threading.Event(), threading.Event()

    def slow(rec):
        arrived.set()
        release.wait(10)
        return 200, {}, b""

    with Receiver(slow) as rx:
        d = WebhookDispatcher(Settings(**{**FAST, "webhook_queue_limit": 5}))
        s = d.sender(rx.url, "p1", events_filter=["output"])  # no terminal: only the backlog is under test
        assert s.send("output", snap(output=[0]))
        assert arrived.wait(5)  # the first one is stuck at the receiver
        for i in range(1, 50):
            assert s.send("output", snap(output=list(range(i + 1))))
        release.set()
        # One in flight plus the five newest queued; the 44 oldest were dropped.
        rx.wait_for(lambda rs: len(rs) >= 6)
        wait_deadline = time.monotonic() + 0.3
        while time.monotonic() < wait_deadline and len(rx.requests) == 6:
            time.sleep(0.02)  # watching for extra deliveries that must not come
        assert len(rx.requests) == 6
        assert [len(r.json()["output"]) for r in rx.requests] == [1, 46, 47, 48, 49, 50]
        s.close()


def test_pending_retries_hold_no_thread_each():
    # 300 terminal webhooks to a dead receiver, all waiting for their next retry: they wait
    # in the pool's timer heap, so the threads stay within the pool's bound.
    import threading
    with Receiver() as rx:
        dead = rx.url
    before = threading.active_count()
    d = WebhookDispatcher(Settings(**{**FAST, "webhook_backoff_base": 5.0, "webhook_workers": 4}))
    senders = [d.sender(dead, f"p{i}") for i in range(300)]
    for s in senders:
        s.send("start", snap())
        s.send("completed", snap("succeeded"))
    wait_until(lambda: len(d.pool) == 300, message="every webhook waiting for its first retry")
    assert len(d.pending()) == 300
    assert d.pool.threads <= 4
    assert threading.active_count() - before <= 4
    d.close()
    wait_until(lambda: d.pool.threads == 0, message="the pool threads to end after close")


def test_pool_threads_end_when_idle_and_come_back_on_demand():
    from minicog.server.timers import TimerPool
    import threading
    pool = TimerPool("t", 3, idle_timeout=0.2)
    ran = []
    gate = threading.Event()
    for i in range(6):
        pool.call_soon(lambda i=i: (gate.wait(5), ran.append(i)))
    wait_until(lambda: pool.threads == 3, message="the pool to grow to its bound on a burst")
    gate.set()
    wait_until(lambda: len(ran) == 6, message="every task")
    wait_until(lambda: pool.threads == 0, message="idle threads to end")
    import time
    t0 = time.monotonic()
    pool.call_at(t0 + 0.1, lambda: ran.append(time.monotonic() - t0))
    wait_until(lambda: len(ran) == 7, message="a timed task")
    assert ran[-1] >= 0.09
    pool.close()
