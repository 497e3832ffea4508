"""Output capture in the worker, observed through the orchestrator."""


from orchestrator_support import Recorder, predict, running
from minicog.worker.logs import LogOwner, truncation_marker


def test_replaced_stdout_is_teed():
    with running("w_stdout.py") as orch:
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
    with running("w_exit.py") as orch:
        assert "setup pid" in orch.setup.logs
        rec = predict(orch, "a", {})
        assert "setup pid" not in rec.logs()


def test_async_prints_and_spawned_tasks_route_to_their_prediction():
    with running("w_async.py", max_concurrency=4) as orch:
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
    with running("w_basic.py", max_log_line_bytes=1024) as orch:
        rec = predict(orch, "long", {"text": "w" * 5000})
        line = rec.logs("stdout").splitlines()[0]
        assert line.endswith(truncation_marker(1024))
        assert len(line.encode()) <= 1024
        assert rec.outputs() == ["W" * 5000]
