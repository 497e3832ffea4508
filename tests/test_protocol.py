"""The frame format and message helpers of minicog.protocol, over real socketpairs."""

import json
import math
import os
import select
import threading
import time
from multiprocessing.connection import Pipe

import pytest

from minicog import protocol


def test_round_trip_compact_json():
    a, b = Pipe()
    protocol.send(a, {"type": "log", "source": "stdout", "data": "héllo\n"})
    raw = b.recv_bytes()
    assert raw == json.dumps({"type": "log", "source": "stdout", "data": "héllo\n"}, separators=(",", ":"), ensure_ascii=False).encode()
    protocol.send(a, {"type": "done", "id": "p1", "is_stream": False, "predict_time": 0.5})
    assert protocol.recv(b) == {"type": "done", "id": "p1", "is_stream": False, "predict_time": 0.5}


def test_nan_is_refused():
    with pytest.raises(ValueError):
        protocol.dumps({"type": "output", "index": 0, "value": math.nan})


@pytest.mark.parametrize("frame", [b"[1]", b"{}", b'{"type": 3}', b"not json"])
def test_bad_frames_raise_protocol_error(frame):
    a, b = Pipe()
    a.send_bytes(frame)
    with pytest.raises(protocol.ProtocolError):
        protocol.recv(b)


def test_eof_when_peer_closes():
    a, b = Pipe()
    a.close()
    with pytest.raises(EOFError):
        protocol.recv(b)


def test_channel_serialises_concurrent_senders():
    a, b = Pipe()
    chan = protocol.Channel(a, "slot 0")
    n, threads = 200, 4

    def blast(t):
        for i in range(n):
            chan.send({"type": "log", "source": "stdout", "data": f"{t}:{i}\n" * 50})

    received = []
    reader = threading.Thread(target=lambda: received.extend(protocol.recv(b) for _ in range(n * threads)))
    reader.start()
    workers = [threading.Thread(target=blast, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    reader.join(10)
    assert len(received) == n * threads
    per_thread = {}
    for msg in received:
        t, i = msg["data"].split("\n")[0].split(":")
        per_thread.setdefault(t, []).append(int(i))
    assert all(v == list(range(n)) for v in per_thread.values())


def test_channel_marks_itself_broken():
    a, b = Pipe()
    chan = protocol.Channel(a, "control")
    b.close()
    with pytest.raises(OSError):
        for _ in range(1000):
            chan.send({"type": "log", "source": "stdout", "data": "x" * 10000})
    assert chan.broken is not None
    with pytest.raises(BrokenPipeError):
        chan.send({"type": "log", "source": "stdout", "data": "y"})


def test_catalogue_is_documented():
    doc = protocol.__doc__
    for name in protocol.CONTROL_TO_WORKER | protocol.CONTROL_TO_PARENT | protocol.SLOT_TO_WORKER | protocol.SLOT_TO_PARENT:
        assert f"``{name}``" in doc, name


def test_held_messages_leave_in_order_on_release():
    a, b = Pipe()
    chan = protocol.Channel(a, "slot 0")
    chan.send({"type": "log", "source": "stdout", "data": "before\n"})
    chan.hold()
    chan.send({"type": "output", "index": 0, "value": "ok"})
    chan.send({"type": "log", "source": "stdout", "data": "late\n"})
    chan.send({"type": "done", "is_stream": False})
    assert protocol.recv(b)["data"] == "before\n"
    assert not b.poll(0)  # held: nothing more has left
    chan.release()
    assert [protocol.recv(b)["type"] for _ in range(3)] == ["output", "log", "done"]
    chan.release()  # nothing held: a no-op
    chan.send({"type": "done", "is_stream": False})  # no longer held
    assert protocol.recv(b)["type"] == "done"


def test_release_on_a_broken_channel_raises():
    a, b = Pipe()
    chan = protocol.Channel(a, "slot 0")
    chan.hold()
    chan.send({"type": "done", "is_stream": False})
    b.close()
    with pytest.raises(OSError):
        chan.release()
    with pytest.raises(BrokenPipeError):
        chan.send({"type": "done", "is_stream": False})  # and later sends fail at once


def test_frame_is_the_connection_framing():
    a, b = Pipe()
    payload = protocol.dumps({"type": "done", "id": "p1"})
    a.send_bytes(payload)
    assert os.read(b.fileno(), 1000) == protocol.frame(payload)


def test_held_messages_are_batched_in_order_across_the_batch_limit():
    a, b = Pipe()
    chan = protocol.Channel(a, "slot 0")
    big = "x" * (protocol._BATCH_BYTES + 10)  # larger than a batch: sent on its own
    near = "y" * (protocol._BATCH_BYTES - 100)  # fills a batch: the next message starts one
    sent = [{"type": "output", "index": 0, "value": "ok"}, {"type": "log", "source": "stdout", "data": near},
            {"type": "log", "source": "stdout", "data": "late\n"}, {"type": "log", "source": "stderr", "data": big},
            {"type": "metric", "name": "n", "value": 1, "mode": "replace"}, {"type": "done", "is_stream": False}]
    chan.hold()
    for msg in sent:
        chan.send(msg)
    received = []

    def read() -> None:  # the parent's side, while release() writes more than a socket buffer
        for _ in sent:
            received.append(protocol.recv(b))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    chan.release()
    reader.join(30)
    assert received == sent


def _poll_pollers():
    kinds = [pytest.param(lambda fd: _registered(select.poll(), fd, select.POLLIN), id="poll")]
    kinds.append(pytest.param(lambda fd: _registered(select.epoll(), fd, select.EPOLLIN), id="epoll",
                              marks=pytest.mark.skipif(not hasattr(select, "epoll"), reason="no epoll")))
    return kinds


def _registered(poller, fd, events):
    poller.register(fd, events)
    return poller


@pytest.mark.parametrize("make_poller", _poll_pollers())
def test_spin_poll_is_true_at_once_when_a_frame_already_waits(make_poller):
    a, b = Pipe()
    poller = make_poller(b.fileno())
    protocol.send(a, {"type": "done", "id": "p1"})
    # A window of 0 still polls once: what is already there is found before the deadline counts.
    assert protocol.spin_poll(poller, 0.0) is True
    assert protocol.recv(b) == {"type": "done", "id": "p1"}


@pytest.mark.parametrize("make_poller", _poll_pollers())
def test_spin_poll_is_true_when_the_peer_writes_during_the_window(make_poller):
    a, b = Pipe()
    poller = make_poller(b.fileno())
    spinning, pace = threading.Event(), threading.Event()

    def peer() -> None:
        assert spinning.wait(10)
        pace.wait(0.02)  # the peer's pace (never set): it writes once the spin has begun
        protocol.send(a, {"type": "done", "id": "late"})

    writer = threading.Thread(target=peer, daemon=True)
    writer.start()
    assert not poller.poll(0)  # nothing there before the spin
    spinning.set()
    # A window far longer than the peer's delay: False would mean it missed the frame.
    assert protocol.spin_poll(poller, 30.0) is True
    writer.join(10)
    assert protocol.recv(b) == {"type": "done", "id": "late"}


@pytest.mark.parametrize("make_poller", _poll_pollers())
def test_spin_poll_is_false_after_the_whole_window_when_nothing_comes(make_poller):
    a, b = Pipe()  # a stays open to the end: a closed peer would make b readable
    poller = make_poller(b.fileno())
    window = 0.05
    start = time.perf_counter()
    assert protocol.spin_poll(poller, window) is False
    assert time.perf_counter() - start >= window  # it gave up only once the window was over
    assert not b.poll(0)


# --- recv_available: what the peer wrote at once, read at once ------------------------

def test_recv_available_reads_frames_written_together_and_leaves_the_next_alone():
    from multiprocessing.connection import Pipe
    a, b = Pipe()
    with a, b:
        protocol.send(b, {"type": "output", "index": 0})
        protocol.send(b, {"type": "done", "id": "x"})
        got = list(protocol.recv_available(a))
        assert [m["type"] for m in got] == ["output", "done"]
        protocol.send(b, {"type": "log", "data": "later"})
        assert protocol.recv(a) == {"type": "log", "data": "later"}  # still on a frame boundary


def test_recv_available_finishes_a_frame_cut_by_its_read():
    from multiprocessing.connection import Pipe
    a, b = Pipe()
    big = "x" * 200_000  # larger than one read and than the socket buffer
    with a, b:
        writer = threading.Thread(target=lambda: (protocol.send(b, {"type": "output", "value": big}),
                                                  protocol.send(b, {"type": "done"})))
        writer.start()
        first = list(protocol.recv_available(a))
        writer.join(30)
        assert first[0] == {"type": "output", "value": big}
        rest = first[1:] or list(protocol.recv_available(a))
        assert rest == [{"type": "done"}]


def test_recv_available_yields_what_came_before_a_bad_frame_then_raises():
    from multiprocessing.connection import Pipe
    a, b = Pipe()
    with a, b:
        protocol.send(b, {"type": "output"})
        b.send_bytes(b"not json")
        it = protocol.recv_available(a)
        assert next(it) == {"type": "output"}
        with pytest.raises(protocol.ProtocolError):
            next(it)


def test_recv_available_raises_eof_when_the_peer_is_gone():
    from multiprocessing.connection import Pipe
    a, b = Pipe()
    b.close()
    with a:
        with pytest.raises(EOFError):
            list(protocol.recv_available(a))


@pytest.mark.parametrize("is_stream, tmp, output", [
    (False, True, None), (True, True, None), (False, False, b'"ok"'), (False, False, b'{"a":[1,2]}'),
])
@pytest.mark.parametrize("prediction_id", ["p-1", "préd \"quoted\" \\ \n"])
def test_done_message_is_the_bytes_dumps_gives_for_its_dict(prediction_id, is_stream, tmp, output):
    msg = {"type": "done", "is_stream": is_stream, "id": prediction_id}
    if not tmp:
        msg["tmp"] = False
    if output is not None:
        msg["output"] = json.loads(output)
    assert protocol.done_message(prediction_id, is_stream, tmp=tmp, output=output) == protocol.dumps(msg)
    assert protocol.loads(protocol.done_message(prediction_id, is_stream, tmp=tmp, output=output)) == msg


@pytest.mark.parametrize("context, input_files, input_json, input_file", [
    (None, None, b"{}", None),
    ({"traceparent": "00-ab-cd-01"}, None, protocol.dumps({"text": "h\u00e9llo", "n": [1, 2.5, None]}), None),
    ({}, [["image", None, "/tmp/in/a.png"], ["images", 1, "/tmp/in/b.png"]], b'{"image":"x"}', None),
    (None, None, None, "/tmp/run-1/inputs/input.json"),
])
@pytest.mark.parametrize("prediction_id", ["p-1", "préd \"quoted\" \\ \n"])
def test_predict_message_is_the_bytes_dumps_gives_for_its_dict(prediction_id, context, input_files, input_json,
                                                              input_file):
    msg = {"type": "predict", "id": prediction_id, "context": dict(context or {}), "tmp_dir": "/tmp/dír/p-1-7"}
    if input_files:
        msg["input_files"] = input_files
    if input_json is not None:
        msg["input"] = json.loads(input_json)
    if input_file is not None:
        msg["input_file"] = input_file
    frame = protocol.predict_message(prediction_id, "/tmp/dír/p-1-7", context=context, input_files=input_files,
                                     input_json=input_json, input_file=input_file)
    assert frame == protocol.dumps(msg)
    assert protocol.loads(frame) == msg


@pytest.mark.parametrize("where", ["id", "tmp_dir", "context"])
def test_predict_message_refuses_a_lone_surrogate(where):
    """Such a str cannot be UTF-8 encoded; the engine turns the ValueError into a 400-class error."""
    bad = "x\udc80"
    with pytest.raises(ValueError):
        protocol.predict_message(bad if where == "id" else "p", bad if where == "tmp_dir" else "/tmp/p",
                                 context={"k": bad} if where == "context" else None, input_json=b"{}")
