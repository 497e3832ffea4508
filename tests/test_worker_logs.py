"""Output capture in the worker, observed through the orchestrator."""


import time

from engine_support import Recorder, predict, running
from minicog.worker.logs import LogFlusher, LogOwner, truncation_marker


def test_replaced_stdout_is_teed():
    with running("replaced_stdout.py") as orch:
        rec = predict(orch, "t", {})
        # The user's StringIO got the line, and so did the prediction's logs.
        assert rec.outputs() == ["captured twice\n"]
        assert rec.logs("stdout") == "captured twice\nback to normal\n"


def test_user_stream_wrapping_the_original_stdout_is_logged_once():
    # sys.stdout = Tee(sys.stdout, file): the text the user's stream passes back into
    # the writer it replaced must not be logged a second time (nor interleaved).
    with running("logs_tee_stdout.py") as orch:
        for original in ("stdout", "__stdout__", "nested"):
            rec = predict(orch, f"tee-{original}", {"original": original})
            assert rec.terminal == ("succeeded", False)
            assert rec.outputs() == ["first line\nsecond line\n"], original
            assert rec.logs() == "first line\nsecond line\nafter\n", (original, rec.logs())


def test_setup_output_goes_to_setup_logs_not_predictions():
    with running("dies_mid_prediction.py") as orch:
        assert "setup pid" in orch.setup.logs
        rec = predict(orch, "a", {})
        assert "setup pid" not in rec.logs()


def test_async_prints_and_spawned_tasks_route_to_their_prediction():
    with running("async_slots.py", max_concurrency=4) as orch:
        assert orch.num_slots == 4
        assert "async setup done" in orch.setup.logs
        recs = {}
        for name in "abcd":
            recs[name] = Recorder()
            orch.submit(name, {"name": name, "seconds": 0.3, "spawn": True}, recs[name])
        for name, rec in recs.items():
            assert rec.wait(10) == ("succeeded", False)
            logs = rec.logs("stdout")
            assert logs == f"start {name}\nchild of {name}\nend {name}\n", logs


class _Sink:
    def __init__(self):
        self.chunks = []

    def __call__(self, source, data):
        self.chunks.append((source, data))

    def text(self):
        return "".join(d for _, d in self.chunks)


def test_line_buffer_emits_whole_lines_only():
    sink = _Sink()
    owner = LogOwner(sink, 1024)
    owner.write("stdout", "ab")
    owner.write("stdout", "c\nde")
    assert sink.chunks == [("stdout", "abc\n")]
    owner.close()
    assert sink.chunks[-1] == ("stdout", "de")
    assert owner.write("stdout", "late\n") is False


def test_over_long_lines_are_truncated_with_marker():
    sink = _Sink()
    owner = LogOwner(sink, 100)
    owner.write("stdout", "y" * 500 + "\nshort\n")
    first, second = sink.text().split("\n")[:2]
    assert first.endswith(truncation_marker(100)) and len(first.encode()) <= 100
    assert second == "short"
    # A partial line that grows past the bound is cut too, and the rest of it dropped.
    sink.chunks.clear()
    owner.write("stdout", "z" * 300)
    owner.write("stdout", "z" * 300 + "\nnext\n")
    lines = sink.text().split("\n")
    assert lines[0].endswith(truncation_marker(100)) and lines[1] == "next"


def test_truncation_in_the_worker():
    with running("basic_echo.py", max_log_line_bytes=1024) as orch:
        rec = predict(orch, "long", {"text": "w" * 5000})
        line = rec.logs("stdout").splitlines()[0]
        assert line.endswith(truncation_marker(1024))
        assert len(line.encode()) <= 1024
        assert rec.outputs() == ["W" * 5000]


def test_a_flood_of_prints_travels_in_few_frames_and_complete():
    # One print() per line used to cost one frame per line (a million frames for
    # 100 MB); complete lines are now batched into frames of up to 256 KiB.
    lines = 100_000  # ~11 MB
    with running("log_flood.py") as orch:
        rec = predict(orch, "flood", {"lines": lines}, timeout=120)
        assert rec.terminal == ("succeeded", False)
        frames = [e for e in rec.events if e[0] == "log"]
        text = rec.logs("stdout")
        assert text.count("\n") == lines and text.startswith("flood 0 ") and f"flood {lines - 1} " in text
        assert len(frames) < 200, f"{len(frames)} log frames for {lines} lines"


def test_batched_lines_keep_their_place_among_outputs_metrics_and_the_other_stream():
    with running("logs_around_outputs.py") as orch:
        rec = predict(orch, "order", {"n": 5})
        assert rec.terminal == ("succeeded", True)
        # Flatten into a sequence of markers, in the order the parent got them.
        seq = []
        for e in rec.events:
            if e[0] == "log":
                seq += [(e[1], line) for line in e[2].splitlines()]
            elif e[0] in ("output", "metric"):
                seq.append((e[0], e[2]))
        expected = []
        for i in range(5):
            expected += [("stdout", f"before output {i}"), ("stderr", f"stderr {i}"), ("stdout", f"before metric {i}"),
                         ("metric", i), ("output", i)]
        assert seq == expected + [("stdout", "last words")]


def test_a_line_is_sent_soon_even_when_nothing_follows_it():
    # The batch is flushed by time too: a model that prints once and then works
    # for a long time must not keep its line back.
    with running("sleeps.py") as orch:
        rec = Recorder()
        orch.submit("quiet", {"seconds": 30}, rec)
        assert rec.first_log.wait(10), rec.events
        assert rec.logs() == "sleeping\n" and not rec.done.is_set()
        orch.cancel("quiet")
        assert rec.wait(20) == ("canceled",)


def test_log_owner_batches_by_size_by_time_and_by_source():
    sink = _Sink()
    flusher = LogFlusher(0.05)
    owner = LogOwner(sink, 1024, flusher=flusher, batch_chars=100)
    for i in range(30):
        owner.write("stdout", f"line {i:02d}\n")  # 8 characters each
    # 100 characters make a frame at once; the rest waits for the flusher.
    assert [len(d) for _, d in sink.chunks] == [104, 104]
    deadline = time.monotonic() + 10
    while len(sink.chunks) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sink.text() == "".join(f"line {i:02d}\n" for i in range(30))
    sink.chunks.clear()
    owner.write("stdout", "a\n")
    owner.write("stderr", "b\n")  # the other source sends what stdout batched first
    owner.write("stdout", "c")
    owner.close()
    assert sink.chunks == [("stdout", "a\n"), ("stderr", "b\n"), ("stdout", "c")]
