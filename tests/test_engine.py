"""The orchestrator with real worker subprocesses: the basic paths."""

import os

import pytest

from minicog import errors
from engine_support import Recorder, predict, running


def test_setup_logs_ready_and_a_prediction():
    with running("basic_echo.py") as orch:
        assert orch.state == "READY"
        assert orch.num_slots == 1 and orch.free_slots == 1
        assert "setting up\n" in orch.setup.logs
        assert orch.setup.status == "succeeded"
        assert orch.setup.started_at <= orch.setup.completed_at
        rec = predict(orch, "p1", {"text": "abc"})
        assert rec.events[0] == ("started",)
        assert rec.terminal == ("succeeded", False)
        assert rec.outputs() == ["ABC"]
        assert rec.logs("stdout") == "got abc\n"
        assert rec.logs("stderr") == "to stderr\n"
        assert orch.free_slots == 1


def test_exception_fails_only_that_prediction_with_traceback_in_logs():
    with running("basic_echo.py") as orch:
        rec = predict(orch, "bad", {"fail": True})
        assert rec.terminal == ("failed", "Prediction failed: ValueError: boom")
        assert "Traceback (most recent call last)" in rec.logs("stderr")
        assert 'raise ValueError("boom")' in rec.logs("stderr")
        # The slot stays healthy and the instance keeps its state.
        rec = predict(orch, "good", {"text": "x"})
        assert rec.terminal == ("succeeded", False)


def test_fd_level_output_and_child_process_reach_the_prediction_logs():
    with running("basic_echo.py") as orch:
        rec = predict(orch, "c", {"c_level": True, "child": True})
        out = rec.logs("stdout")
        assert "from C\n" in out and "from child\n" in out
        assert "from C stderr\n" in rec.logs("stderr")
        # Everything arrives before the terminal event.
        assert rec.events[-1][0] == "succeeded"


def test_partial_line_is_flushed_at_the_end_and_does_not_leak():
    with running("basic_echo.py") as orch:
        first = predict(orch, "p", {"partial": True})
        assert first.logs("stdout").endswith("no newline at end")
        second = predict(orch, "q", {"text": "next"})
        assert second.logs("stdout") == "got next\n"


def test_metrics_are_delivered_in_order():
    with running("basic_echo.py") as orch:
        rec = predict(orch, "m", {"metric": 3})
        metrics = [e[1:] for e in rec.events if e[0] == "metric"]
        assert metrics == [("tokens", 3, "replace"), ("tokens", 1, "increment")]


def test_context_and_back_to_back_submissions_never_hit_capacity():
    with running("basic_echo.py") as orch:
        for i in range(50):
            rec = predict(orch, f"b{i}", {"text": str(i)})
            assert rec.outputs() == [str(i)]


def test_capacity_duplicate_id_and_not_ready_errors():
    with running("sleeps.py") as orch:
        rec = Recorder()
        orch.submit("long", {"seconds": 30}, rec)
        assert rec.first_log.wait(10)
        with pytest.raises(errors.AtCapacity):
            orch.submit("other", {}, Recorder())
        with pytest.raises(errors.RequestError):
            orch.submit("long", {}, Recorder())
        assert orch.cancel("long") is True
        assert rec.wait(10) == ("canceled",)
        assert orch.cancel("long") is False
    with pytest.raises(errors.ServiceUnavailable):
        orch.submit("late", {}, Recorder())


def test_healthcheck_default_is_healthy():
    with running("basic_echo.py") as orch:
        assert orch.healthcheck() == (True, None)


def test_stop_reaps_the_worker_and_removes_temp_files():
    with running("basic_echo.py") as orch:
        pid = orch.pid
        root = orch._tmp_root
        assert pid and os.path.isdir(root)
    assert orch.state == "STOPPED"
    assert not os.path.exists(root)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left


def test_threads_of_a_sync_prediction_log_to_it_and_secrets_are_wrapped():
    with running("basic_echo.py") as orch:
        rec = predict(orch, "t", {"thread": True, "token": "s3cret"})
        out = rec.logs("stdout")
        assert "from a thread\n" in out
        assert "token ********** Secret 6\n" in out


@pytest.mark.slow
def test_worker_exits_when_the_parent_dies(tmp_path):
    import signal
    import subprocess
    import sys

    from support import ROOT, predictor, wait_until

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from minicog.engine import Orchestrator\n"
        f"o = Orchestrator({predictor('basic_echo.py')!r})\n"
        "o.start()\n"
        "assert o.wait_ready(30)\n"
        "print(o.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    # Killed, the parent cannot remove the engine's temporary folder: keep it out of /tmp.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              env={**os.environ, "TMPDIR": str(tmp)})
    try:
        worker_pid = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)

        def gone():
            try:
                with open(f"/proc/{worker_pid}/stat") as f:
                    return f.read().split(")")[1].split()[0] == "Z"  # exited, waiting for init
            except FileNotFoundError:
                return True

        wait_until(gone, timeout=10, message="the orphaned worker to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)


def test_schema_arrives_before_setup_ends():
    # The worker sends its schema right after the import, before setup(): a caller
    # can check input while a 60 s setup() runs (python -m minicog predict does).
    with running("cli_slow_setup.py", ready=False) as orch:
        doc = orch.wait_schema(30)
        assert doc is not None and doc["openapi"] == "3.0.2"
        assert "Input" in doc["components"]["schemas"]
        assert orch.state == "STARTING"
        assert orch.schema is None  # /openapi.json stays 503 until ready, as coglet's


def test_wait_schema_is_none_when_the_model_fails_to_load():
    with running("load_import_error.py", ready=False) as orch:
        assert orch.wait_schema(30) is None
        assert orch.state == "SETUP_FAILED"
