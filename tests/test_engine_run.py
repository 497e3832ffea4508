"""Run handles (minicog.engine.run): what submit() returns, released exactly once, and
a slot given back by any failure between taking it and handing the run to the worker."""

import os
import sys
import threading

import pytest

from minicog import errors
from minicog.engine import DuplicateRun, Run
from engine_support import Recorder, ThreadRecorder, predict, running
from support import wait_until


def _folder_files(run):
    return [os.path.join(d, f) for d, _, fs in os.walk(run.folder) for f in fs]


def test_submit_returns_a_run_that_knows_its_id_listener_worker_and_end():
    with running("basic_echo.py") as orch:
        rec = Recorder()
        run = orch.submit("r1", {"text": "x"}, rec)
        assert isinstance(run, Run)
        assert run.id == "r1" and run.listener is rec and run.worker == 0
        assert run.wait(20) and run.done()
        assert rec.terminal == ("succeeded", False)
        assert orch.find("r1") is None  # in flight no more: the id may be used again
        assert run.cancel() is False
        run.release()
        assert orch.open_runs() == []


@pytest.mark.parametrize("order", [
    # Every order of the three (a disconnect is a cancel then a release), and a release repeated.
    ("end", "release", "cancel"),
    ("end", "cancel", "release"),
    ("release", "cancel", "end"),
    ("release", "end", "cancel"),
    ("cancel", "release", "end"),
    ("cancel", "end", "release"),
    ("release", "end", "release"),
])
def test_the_folder_goes_exactly_once_whatever_the_order(order):
    with running("run_file_then_wait.py") as orch:
        rec = Recorder()
        run = orch.submit("files", {"seconds": 30 if order[0] != "end" else 0}, rec)
        assert rec.first_output.wait(20)
        path = next(e for e in rec.events if e[0] == "file_output")[2]
        assert path.startswith(run.folder) and os.path.exists(path)
        for step in order:
            if step == "end":
                if order[0] != "end" and not run.cancel_requested:
                    assert run.cancel()  # a 30 s run ends only through a cancel
                assert run.wait(20)
            elif step == "release":
                run.release()
            else:
                run.cancel()
            if not run.released or (not run.done() and not run.cancel_requested):
                assert os.path.exists(path), f"files removed before the end and a release (after {step})"
            if run.released and run.done():
                wait_until(lambda: not os.path.exists(path), 5, message="the folder to go")
                assert run not in orch.open_runs()
        assert not os.path.exists(path)
        assert len([e for e in rec.events if e[0] in ("succeeded", "failed", "canceled")]) == 1
        expected = "succeeded" if order[0] == "end" else "canceled"
        assert rec.terminal[0] == expected
        # A new run with the same id is not touched by the old run's late releases.
        again = Recorder()
        run2 = orch.submit("files", {"seconds": 0}, again)
        again.wait(20)
        path2 = next(e for e in again.events if e[0] == "file_output")[2]
        run.release()
        run.cancel()
        assert os.path.exists(path2)
        run2.release()
        assert not os.path.exists(path2)


def test_a_cancel_before_the_request_is_sent_still_stops_the_run():
    """The window between registering a run and sending it: the cancel is sent right after."""
    with running("sleeps.py") as orch:
        class CancelsAtStart(Recorder):
            def started(self):
                super().started()
                self.cancel_answer = orch.cancel("early")  # inside submit(), before the send

        rec = CancelsAtStart()
        run = orch.submit("early", {"seconds": 60}, rec)
        assert rec.cancel_answer is True and run.cancel_requested
        assert rec.wait(10) == ("canceled",)
        assert predict(orch, "after", {"seconds": 0}).terminal[0] == "succeeded"


def test_a_second_submit_of_an_id_in_flight_names_the_run():
    with running("sleeps.py") as orch:
        first = orch.submit("same", {"seconds": 30}, Recorder())
        with pytest.raises(DuplicateRun) as info:
            orch.submit("same", {"seconds": 0}, Recorder())
        assert info.value.run is first
        assert isinstance(info.value, errors.RequestError)
        first.cancel()
        assert first.wait(10)


@pytest.mark.parametrize("where", ["id", "context key", "context value"])
def test_an_unencodable_id_or_context_takes_no_slot(where):
    """A lone surrogate cannot be UTF-8 encoded: the framing fails; the slot stays free."""
    bad = "bad\ud800"
    with running("basic_echo.py") as orch:
        pid, context = "p", {}
        if where == "id":
            pid = bad
        elif where == "context key":
            context = {bad: "v"}
        else:
            context = {"k": bad}
        rec = Recorder()
        with pytest.raises(errors.RequestError, match="cannot be sent"):
            orch.submit(pid, {"text": "x"}, rec, context=context)
        assert rec.events == []  # never started
        assert orch.free_slots == 1 and orch.in_flight() == [] and orch.open_runs() == []
        assert predict(orch, "next", {"text": "ok"}).outputs() == ["OK"]


def test_input_that_is_not_json_takes_no_slot():
    with running("basic_echo.py") as orch:
        with pytest.raises(errors.RequestError, match="input is not JSON"):
            orch.submit("p", {"text": float("nan")}, Recorder())
        with pytest.raises(errors.RequestError, match="input is not JSON"):
            orch.submit("p", {"text": object()}, Recorder())
        assert orch.free_slots == 1 and orch.open_runs() == []


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt/SystemExit arriving inside submit()."""


def test_an_interrupt_in_started_gives_the_slot_back():
    with running("basic_echo.py") as orch:
        class Interrupted(Recorder):
            def started(self):
                raise _Interrupt()

        with pytest.raises(_Interrupt):
            orch.submit("p", {"text": "x"}, Interrupted())
        assert orch.free_slots == 1 and orch.in_flight() == [] and orch.open_runs() == []
        assert predict(orch, "p", {"text": "again"}).outputs() == ["AGAIN"]


def test_a_listener_bug_in_started_is_logged_and_the_run_goes_on():
    with running("basic_echo.py") as orch:
        class Buggy(Recorder):
            def started(self):
                raise RuntimeError("listener bug")

        rec = Buggy()
        orch.submit("p", {"text": "x"}, rec)
        assert rec.wait(20) == ("succeeded", False)
        assert orch.free_slots == 1


def test_a_spill_that_cannot_be_written_gives_the_slot_back(tmp_path):
    """The input spill is written after the slot is taken: its failure must return the slot."""
    with running("file_io.py", max_inline_ipc_bytes=1024) as orch:
        # A file where the run's folder should go makes the spill's makedirs fail.
        real = orch._tmp_root
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("x")
        orch._tmp_root = str(blocker)
        try:
            with pytest.raises(errors.WorkerError, match="temporary folder"):
                orch.submit("big", {"mode": "echo_len", "blob": "b" * 4096}, Recorder())
        finally:
            orch._tmp_root = real
        assert orch.free_slots == 1 and orch.open_runs() == []
        assert predict(orch, "big", {"mode": "echo_len", "blob": "b" * 4096}).outputs() == [4096]


def test_concurrent_cancels_and_releases_end_a_run_once():
    with running("run_file_then_wait.py") as orch:
        rec = Recorder()
        run = orch.submit("race", {"seconds": 30}, rec)
        assert rec.first_output.wait(20)
        barrier = threading.Barrier(8)

        def hammer(i):
            barrier.wait(5)
            run.cancel() if i % 2 else run.release()

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert rec.wait(10) == ("canceled",)
        wait_until(lambda: run not in orch.open_runs() and not os.path.exists(run.folder), 5,
                   message="the folder to go")
        assert len([e for e in rec.events if e[0] in ("succeeded", "failed", "canceled")]) == 1


def test_latch_releases_every_waiter_once_set_and_times_out_before():
    from minicog.engine.run import Latch

    latch = Latch()
    assert not latch.is_set() and latch.wait(0.05) is False and latch.wait(0) is False
    woke: list[bool] = []
    lock = threading.Lock()

    def waiter() -> None:
        got = latch.wait(30)
        with lock:
            woke.append(got)

    threads = [threading.Thread(target=waiter) for _ in range(8)]
    for t in threads:
        t.start()
    latch.set()
    latch.set()  # a second set is a no-op, not a double release
    for t in threads:
        t.join(30)
    assert woke == [True] * 8
    assert latch.is_set() and latch.wait() is True and latch.wait(0) is True


def test_read_until_dispatches_on_the_caller_then_gives_the_slot_back():
    # A streaming reader's first token without a hand-off from the I/O thread: with
    # submit(wait=True) the slot is kept from the I/O thread, read_until() reads it on
    # the calling thread up to the first output, then hands it back and the I/O thread
    # reads the rest of the run with nobody driving it.
    with running("http_stream.py") as orch:
        rec = ThreadRecorder()
        run = orch.submit("first-token", {"n": 3, "gap": 0.3}, rec, wait=True)
        assert run.read_until(rec.first_output.is_set, 20)
        me = threading.get_ident()
        with rec.lock:
            upto = next(i for i, e in enumerate(rec.events) if e[0] == "output")
            assert rec.threads[1:upto + 1] == [me] * upto, rec.events  # after "started" (submit's)
        assert rec.wait(20) == ("succeeded", True)
        assert rec.outputs() == ["tok0", "tok1", "tok2"]
        with rec.lock:
            assert rec.threads[-1] != me  # the end came through the I/O thread
        run.release()


def test_a_run_that_wrote_no_file_has_no_folder_and_a_spilled_one_is_removed(tmp_path):
    # The worker says when nothing made the run's folder (``tmp: false``): the run then
    # has no folder left to remove.  A spilled input makes one (the parent writes it),
    # which goes after the end and the release as usual.
    with running("basic_echo.py", tmp_dir=str(tmp_path), max_inline_ipc_bytes=4096) as orch:
        rec = Recorder()
        small = orch.submit("small", {"text": "x"}, rec)
        assert small.wait(20) and rec.terminal == ("succeeded", False)
        assert small.folder is None
        small.release()
        rec = Recorder()
        big = orch.submit("big", {"text": "y" * 10000}, rec)
        assert big.wait(20) and rec.terminal == ("succeeded", False)
        assert big.folder is not None and os.path.isdir(big.folder)
        big.release()
        wait_until(lambda: not os.path.exists(big.folder), 5, message="the spilled run's folder to go")
        roots = [os.path.join(tmp_path, d) for d in os.listdir(tmp_path)]
        assert [os.listdir(r) for r in roots if os.path.isdir(r)] == [[]]  # the engine's root, empty


def test_a_run_submitted_before_its_listener_gives_it_every_call_in_order_on_attach():
    """submit(listener=None, wait=True) sends the request first (an HTTP record is built while
    the worker runs); attach() then makes started() on the caller's thread, and the rest
    comes as for any run, in the order the worker sent it."""
    with running("logs_around_outputs.py") as orch:
        run = orch.submit("early", {"n": 2}, None, wait=True)
        assert orch.find("early") is run
        rec = ThreadRecorder()
        run.attach(rec)
        assert rec.events[0] == ("started",) and rec.threads[0] == threading.get_ident()
        assert run.listener_now() is rec
        assert run.wait(20)
        assert rec.terminal == ("succeeded", True) and rec.outputs() == [0, 1]
        assert [e[0] for e in rec.events if e[0] in ("output", "metric")] == ["metric", "output"] * 2
        assert rec.logs("stdout").endswith("last words")
        with pytest.raises(RuntimeError):
            run.attach(Recorder())  # one listener per run
        run.release()
        assert wait_until(lambda: orch.open_runs() == [], 10)


def test_a_run_without_a_listener_must_be_waited_for():
    with running("basic_echo.py") as orch:
        with pytest.raises(ValueError, match="wait=True"):
            orch.submit("p", {"text": "x"}, None)
        assert orch.free_slots == 1 and orch.open_runs() == []


def test_the_end_of_a_run_that_died_before_attach_is_kept_for_its_listener():
    """The worker dies after the request went out and before the caller attached: the
    engine's terminal call waits in the run, and attach() makes it after started()."""
    with running("sleeps.py") as orch:
        run = orch.submit("dies", {"seconds": 30}, None, wait=True)
        os.kill(orch.pid, 9)
        assert wait_until(run.done, 20)  # ended by the engine, with nobody to tell yet
        rec = Recorder()
        run.attach(rec)
        assert rec.events[0] == ("started",)
        assert rec.terminal[0] == "failed" and rec.done.is_set()
        assert len(rec.events) == 2
        run.release()
        assert orch.wait_ready(30)  # respawned
        assert predict(orch, "after", {"seconds": 0}).terminal == ("succeeded", False)


def test_listener_now_waits_for_attach_and_gives_up_after_its_timeout():
    """Another thread that finds the run meanwhile (a cancel, a second PUT of the id) waits
    for the listener the caller is attaching instead of seeing a run without one."""
    with running("basic_echo.py") as orch:
        run = orch.submit("waited", {"text": "x"}, None, wait=True)
        assert run.listener_now(timeout=0.05) is None  # nobody attached (yet)
        rec = Recorder()
        found: list = []
        finder = threading.Thread(target=lambda: found.append(orch.find("waited").listener_now(timeout=20)))
        finder.start()

        def finder_waits() -> bool:  # blocked in the run's latch, not just started
            frame = sys._current_frames().get(finder.ident)
            while frame is not None:
                if frame.f_code.co_name == "listener_now":
                    return True
                frame = frame.f_back
            return False

        assert wait_until(finder_waits, 5)
        run.attach(rec)
        finder.join(20)
        assert found == [rec]
        assert run.wait(20) and rec.terminal == ("succeeded", False)
        run.release()


def test_a_run_ended_and_released_forgets_its_listener_so_refcounting_frees_them():
    """An HTTP record keeps its run, and the run its listener: once the run has ended and
    been released, the run lets go of it, so no cycle is left for the garbage collector
    (whose full passes took tens of ms with a thousand records kept for reads)."""
    import gc
    import weakref

    with running("basic_echo.py") as orch:
        rec = Recorder()
        run = orch.submit("cycle", {"text": "x"}, rec)
        rec.run = run  # the cycle a record makes
        assert run.wait(20)
        assert run.listener is rec  # ended, not released: the listener may still be called
        gone = weakref.ref(rec)
        gc.disable()
        try:
            run.release()
            assert run.listener is None
            del rec, run
            assert gone() is None  # freed without a collection
        finally:
            gc.enable()
