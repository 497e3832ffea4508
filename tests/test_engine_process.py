"""One worker process (minicog.engine.process): spawn, exit descriptions, reaping, shutdown,
and waiting for a worker's answer (drive(), spinning first: Settings.spin_wait)."""

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from minicog.engine import Engine, process
from minicog.engine.process import describe_exit
from minicog.settings import Settings
from engine_support import Recorder, ThreadRecorder, predict, running
from support import ROOT, predictor, wait_until


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


def _needs_spinning(spin_wait: float) -> None:
    if Settings(spin_wait=spin_wait).spin_window() == 0:
        pytest.skip("this process may use only one CPU: nothing spins")


def test_back_to_back_sync_predictions_with_spinning_all_succeed():
    # Both sides spin: the request thread in drive() for the answer, the worker for its
    # next request.  Every answer arrives, whether a waiter reads it or the I/O thread.
    _needs_spinning(0.001)
    with running("basic_echo.py", spin_wait=0.001) as orch:
        for i in range(300):
            rec = Recorder()
            if i % 10 == 9:  # now and then nobody waits: the I/O thread reads the slot again
                orch.submit(f"io{i}", {"text": f"t{i}"}, rec)
                assert rec.wait(20) == ("succeeded", False)
            else:
                run = orch.submit(f"sync{i}", {"text": f"t{i}"}, rec, wait=True)
                assert run.wait(20), f"prediction {i}: {rec.events[-3:]}"
                assert rec.terminal == ("succeeded", False)
                run.release()
            assert rec.outputs() == [f"T{i}"]


@pytest.mark.parametrize("model,kw,inp", [
    ("workers_identity.py", {"workers": 2}, {"seconds": 0.2}),  # two processes
    ("async_slots.py", {"max_concurrency": 2}, {"seconds": 0.2}),  # two slots of one process
], ids=["two-workers", "two-slots"])
def test_two_threads_waiting_at_once_both_read_their_own_answers(model, kw, inp):
    # One thread of the process spins at a time (the gate); the other waits blocking on
    # its slot and must still get its answer, on its own thread (it drove its slot).
    spin = 0.1  # the longest window: the first waiter holds the gate while the other comes
    _needs_spinning(spin)
    with running(model, spin_wait=spin, **kw) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="two free slots")
        for round_ in range(5):
            barrier = threading.Barrier(2, timeout=20)
            results: dict[str, tuple] = {}

            def waiter(name: str) -> None:
                rec = ThreadRecorder()
                barrier.wait()
                run = orch.submit(name, inp, rec, wait=True)
                ended = run.wait(20)
                results[name] = (ended, rec.terminal if ended else rec.events[-3:],
                                 ended and rec.terminal_thread() == threading.get_ident())
                run.release()

            threads = [threading.Thread(target=waiter, args=(f"r{round_}-{k}",)) for k in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(results) == [f"r{round_}-0", f"r{round_}-1"], results
            for name, (ended, terminal, own_thread) in results.items():
                assert ended and terminal == ("succeeded", False), (name, terminal)
                assert own_thread, f"{name}: the answer did not come through its waiting thread"


def test_a_waiter_that_finds_the_spin_gate_taken_still_gets_its_answer():
    # Another thread of the process spinning (here: the test holding the same gate)
    # must not make a waiter wait for it: it skips the spin and blocks on its slot.
    _needs_spinning(0.001)
    with running("basic_echo.py", spin_wait=0.001) as orch:
        outcome: list = []
        rec = ThreadRecorder()
        assert process._SPIN_GATE.acquire(timeout=10)
        try:
            run = orch.submit("gated", {"text": "g"}, rec, wait=True)
            waiter = threading.Thread(target=lambda: outcome.append((run.wait(20), threading.get_ident())))
            waiter.start()
            waiter.join(30)
            assert outcome and outcome[0][0], f"no answer while the gate was held: {rec.events[-3:]}"
        finally:
            process._SPIN_GATE.release()
        assert rec.terminal == ("succeeded", False) and rec.outputs() == ["G"]
        assert rec.terminal_thread() == outcome[0][1]  # read by the waiter itself
        run.release()


@pytest.mark.parametrize("spin_wait", [0.0, 0.05])
def test_the_worker_spins_for_the_window_the_parent_sends(spin_wait):
    # spin_probe reports the window its worker's sync loop uses: the parent's spin_window().
    with running("spin_probe.py", spin_wait=spin_wait) as orch:
        seen = predict(orch, "probe", {}).outputs()[0]
    expected = Settings(spin_wait=spin_wait).spin_window()
    assert seen == {"loop_spin": expected, "settings_spin": expected}


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no os.sched_setaffinity on this platform")
def test_a_server_pinned_to_one_cpu_tells_its_worker_not_to_spin():
    # The worker inherits the pinning; the parent, which decides, sends 0.
    script = (
        "import json, os, sys\n"
        f"sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "from engine_support import predict, running\n"
        "with running('spin_probe.py', spin_wait=0.05) as orch:\n"
        "    print(json.dumps(predict(orch, 'probe', {}).outputs()[0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"loop_spin": 0.0, "settings_spin": 0.0}
