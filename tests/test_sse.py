"""EventStream: ids, replay, Last-Event-ID resume, truncation, lag, subscriber bound."""

import json
import pytest

from minicog.server.sse import (LAGGED_MESSAGE, TRUNCATED_MESSAGE, EventStream, TooManySubscribers,
                                encode_event)


def drain(sub, timeout=2.0):
    out = []
    while True:
        ev = sub.get(timeout)
        if ev is None:
            assert sub.done, "subscriber timed out instead of ending"
            return out
        out.append(ev)


def test_events_are_numbered_and_replayed_in_order():
    s = EventStream(history=10)
    for i in range(3):
        s.publish("output", {"chunk": i, "index": i})
    s.close()
    events = drain(s.subscribe())
    assert [e.id for e in events] == [1, 2, 3]
    assert [e.data["chunk"] for e in events] == [0, 1, 2]


def test_last_event_id_resumes_after_it():
    s = EventStream(history=10)
    for i in range(5):
        s.publish("log", {"data": str(i)})
    sub = s.subscribe(last_event_id=3)
    s.publish("log", {"data": "live"})
    s.close()
    assert [(e.id, e.data["data"]) for e in drain(sub)] == [(4, "3"), (5, "4"), (6, "live")]


def test_evicted_history_gives_truncated_error_with_count():
    s = EventStream(history=2)
    for i in range(8):
        s.publish("log", {"data": str(i)})
    events = drain(s.subscribe())
    assert len(events) == 1 and events[0].name == "error"
    assert events[0].data == {"error": TRUNCATED_MESSAGE, "skipped": 6}
    # resuming from inside the kept window works
    assert [e.id for e in drain_after_close(s, 6)] == [7, 8]


def drain_after_close(s, last):
    s.close()
    return drain(s.subscribe(last_event_id=last))


def test_zero_capacity_means_live_only():
    s = EventStream(history=0)
    s.publish("log", {"data": "before"})
    sub = s.subscribe()
    s.publish("log", {"data": "after"})
    s.close()
    assert [e.data["data"] for e in drain(sub)] == ["after"]


def test_lagging_reader_is_dropped_without_blocking_publisher_or_others():
    s = EventStream(history=0, queue_size=4)
    slow = s.subscribe()
    fast = s.subscribe()
    got = []
    for i in range(50):  # never blocks even though `slow` reads nothing
        s.publish("output", {"chunk": i, "index": i})
        got.append(fast.get(1.0))
    s.close()
    assert [e.data["chunk"] for e in got] == list(range(50))
    events = drain(slow)
    assert len(events) == 1 and events[0].name == "error"
    assert events[0].data == {"error": LAGGED_MESSAGE, "skipped": 50}
    assert events[0].id == 0  # the last event this reader got: resume from the start


def test_subscriber_limit():
    s = EventStream(max_subscribers=2)
    s.subscribe()
    s.subscribe()
    with pytest.raises(TooManySubscribers) as info:
        s.subscribe()
    assert info.value.http_status == 429
    assert str(info.value) == "Too many stream subscribers"


def test_keepalive_timeout_returns_none_without_ending():
    s = EventStream()
    sub = s.subscribe()
    assert sub.get(0.05) is None and not sub.done
    sub.close()
    assert s.subscriber_count == 0


def test_encode_event_has_id_event_and_compact_data():
    s = EventStream()
    ev = s.publish("output", {"chunk": "é\n", "index": 0})
    raw = encode_event(ev).materialize().decode("utf-8")
    assert raw.startswith("id: 1\nevent: output\ndata: ")
    assert raw.endswith("\n\n")
    data = raw.split("data: ", 1)[1][:-2]
    assert "\n" not in data and json.loads(data) == {"chunk": "é\n", "index": 0}
