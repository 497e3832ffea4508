"""One worker process (minicog.engine.process): spawn, exit descriptions, reaping, shutdown."""

import os
import signal

from minicog.engine import Engine
from minicog.engine.process import describe_exit
from minicog.settings import Settings
from engine_support import predict, running
from support import predictor, wait_until


def test_exit_descriptions():
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by signal SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"
    assert describe_exit(None) == "unknown exit status"


def test_a_worker_that_cannot_be_spawned_is_a_setup_failure(tmp_path):
    engine = Engine(predictor("basic_echo.py"), settings=Settings(), cwd=str(tmp_path / "missing"))
    engine.start()
    try:
        assert engine.wait_ready(10) is False
        assert engine.state == "SETUP_FAILED"
        assert engine.setup.error.startswith("cannot start the worker process")
        assert engine.pid is None
    finally:
        engine.stop(timeout=5)


def test_the_process_gets_its_own_channels_and_answers_shutdown_with_exit_0():
    with running("basic_echo.py") as orch:
        proc = orch._seats[0].proc
        assert proc.pid == orch.pid and proc.ready and proc.control is not None
        assert len(proc.slots) == orch.num_slots == 1
        assert predict(orch, "p", {"text": "x"}).outputs() == ["X"]
    assert proc.popen.returncode == 0 and proc.exited
    assert proc.thread is not None and not proc.thread.is_alive()


def test_a_killed_process_is_reaped_and_replaced_by_a_new_generation():
    with running("basic_echo.py") as orch:
        first = orch._seats[0].proc
        os.kill(first.pid, signal.SIGKILL)
        wait_until(lambda: orch._seats[0].proc is not first and orch.state == "READY", 30,
                   message="a new worker process")
        assert first.exited and first.popen.returncode == -signal.SIGKILL
        assert orch._seats[0].proc.number == first.number + 1
        assert predict(orch, "after", {"text": "y"}).outputs() == ["Y"]


def test_setup_output_goes_to_the_setup_logs_of_its_own_worker():
    with running("basic_echo.py", workers=2) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        logs = [seat.setup.logs for seat in orch._seats]
        assert all("setting up\n" in text for text in logs)
