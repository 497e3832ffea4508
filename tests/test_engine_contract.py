"""Points of the worker/orchestrator contract (issue #3) not covered elsewhere, each over
real worker subprocesses."""

import logging
import os
import sys
import threading
import time

import pytest

from engine_support import Gate, Recorder, predict, running
from support import wait_until


def test_worker_is_a_fresh_interpreter_and_ready_carries_the_schema():
    with running("basic_echo.py") as orch:
        with open(f"/proc/{orch.pid}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        assert argv[0] == sys.executable  # spawned, not forked from the test process
        assert argv[1:3] == ["-m", "minicog.worker"]
        schemas = orch.schema["components"]["schemas"]
        assert set(schemas["Input"]["properties"]) >= {"text", "fail", "token"}
        assert schemas["Output"]["type"] == "string"
        assert orch.streaming is False and orch.is_async is False


def test_concurrent_decorator_sets_the_slot_count_reported_by_the_worker():
    with running("async_misbehaving.py") as orch:  # no COG_MAX_CONCURRENCY, no argument
        assert orch.num_slots == 3 and orch.free_slots == 3
    with running("async_misbehaving.py", slot_channel_limit=2) as orch:
        assert orch.num_slots == 2  # capped to the channels opened
        assert "capped" in orch.setup.logs


def test_worker_death_fails_every_prediction_in_flight():
    with running("async_misbehaving.py") as orch:
        pid = orch.pid
        bystander = Recorder()
        orch.submit("by", {"seconds": 30, "tag": "by"}, bystander)
        assert bystander.first_log.wait(10)
        killer = predict(orch, "killer", {"mode": "exit", "tag": "k"})
        assert killer.terminal == ("failed", "Worker crashed: exit code 9")
        assert bystander.wait(10) == ("failed", "Worker crashed: exit code 9")
        assert orch.wait_ready(30) and orch.pid != pid
        assert predict(orch, "after", {"tag": "a"}).outputs() == ["done a"]


def test_fd_output_with_two_predictions_running_is_orphan_not_misattributed(caplog):
    caplog.set_level(logging.WARNING, logger="minicog.worker")
    with running("async_misbehaving.py") as orch:
        long = Recorder()
        orch.submit("long", {"seconds": 30, "tag": "long"}, long)
        assert long.first_log.wait(10)
        fd = predict(orch, "fd", {"mode": "fd", "tag": "two"})
        assert fd.terminal == ("succeeded", False)
        wait_until(lambda: any("fd output of two" in r.getMessage() for r in caplog.records), 10,
                   message="the orphan fd line in the parent's log")
        assert "fd output of two" not in fd.logs() and "fd output of two" not in long.logs()
        orch.cancel("long")
        assert long.wait(10) == ("canceled",)
        # With exactly one prediction running, the same write is attributed to it.
        alone = predict(orch, "alone", {"mode": "fd", "tag": "one"})
        assert "fd output of one\n" in alone.logs("stdout")


def test_output_of_a_thread_that_outlives_its_prediction_is_logged_as_orphan(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="minicog.worker")
    trigger = tmp_path / "go"
    with running("orphan_thread_output.py") as orch:
        rec = predict(orch, "first", {"trigger": str(trigger)})
        assert rec.outputs() == ["started"]
        trigger.write_text("go")  # the prediction is over; its thread speaks now
        wait_until(lambda: sum("orphan" in r.getMessage() and "finished prediction" in r.getMessage()
                               for r in caplog.records), 10, message="the orphan line in the parent's log")
        wait_until(lambda: any("orphan fd line" in r.getMessage() for r in caplog.records), 10,
                   message="the orphan fd line in the parent's log")
        assert "orphan line" not in rec.logs()
        # The next prediction's logs do not get it either.
        nxt = predict(orch, "second", {"trigger": str(tmp_path / "never")})
        assert "orphan line from a finished prediction" not in nxt.logs()


def test_broken_slot_channel_is_poisoned_and_the_other_slots_serve_on():
    with running("async_misbehaving.py") as orch:
        pid = orch.pid
        rec = predict(orch, "breaker", {"mode": "break", "tag": "b"})
        kind, error = rec.terminal
        assert kind == "failed" and error.startswith("Slot channel broken"), rec.terminal
        wait_until(lambda: orch.free_slots == 2, 10, message="the poisoned slot to be dropped")
        assert orch.pid == pid  # same worker: only the slot is lost
        recs = [Recorder() for _ in range(2)]
        for i, r in enumerate(recs):
            orch.submit(f"ok{i}", {"seconds": 0.2, "tag": str(i)}, r)
        assert [r.wait(10) for r in recs] == [("succeeded", False)] * 2


def test_worker_exits_when_every_slot_is_poisoned_and_is_respawned():
    with running("async_misbehaving.py", max_concurrency=1) as orch:
        pid = orch.pid
        rec = predict(orch, "breaker", {"mode": "break", "tag": "b"})
        assert rec.terminal[0] == "failed"
        assert orch.wait_state(lambda s: s == "READY" and orch.pid not in (None, pid), 30) == "READY"
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reaped
        assert predict(orch, "after", {"tag": "a"}).outputs() == ["done a"]


def test_shutdown_makes_the_worker_exit_by_itself():
    with running("basic_echo.py") as orch:
        proc = orch._seats[0].proc
    assert proc.popen.returncode == 0  # answered shutdown and exited, not killed


def test_a_slow_healthcheck_blocks_no_cancel(tmp_path):
    mode, started = tmp_path / "mode", tmp_path / "healthcheck-started"
    mode.write_text("slow")
    # The user's healthcheck sleeps 30 s and may take all of it: a cancel that had to wait
    # for it would end after it.  So the order of the two answers is the proof, not a timing.
    # A cancel the worker lost would end only by the kill after the grace period: 60 s here.
    env = {"W_HEALTH_MODE_FILE": str(mode), "W_HEALTH_STARTED_FILE": str(started)}
    with running("health_sync.py", env=env, healthcheck_timeout=30, healthcheck_parent_timeout=60,
                 cancel_grace_period=60) as orch:
        pid = orch.pid
        hc = {}
        checker = threading.Thread(target=lambda: hc.update(r=orch.healthcheck()), daemon=True)
        checker.start()
        wait_until(started.exists, 20, message="the user's healthcheck to be running")
        rec = Recorder()
        orch.submit("p", {"seconds": 60}, rec)
        assert rec.first_log.wait(20), rec.events  # inside predict(), next to the healthcheck
        assert orch.cancel("p")
        assert rec.wait(20) == ("canceled",)
        assert "r" not in hc and checker.is_alive()  # the healthcheck is still running
        assert orch.pid == pid and orch.restarts == {"crash": 0, "cancel_timeout": 0, "recycle": 0}
        # The same worker serves on meanwhile.
        assert predict(orch, "next", {"seconds": 0}).terminal == ("succeeded", False)
        assert orch.pid == pid and "r" not in hc
    checker.join(20)  # stop() ended the worker: the healthcheck in flight got its answer
    assert not checker.is_alive() and hc["r"][0] is False, hc


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_a_log_flood_meets_backpressure_instead_of_growing_memory(tmp_path):

    progress = tmp_path / "progress"
    lines = 50000  # ~5.5 MB of output
    with running("log_flood.py") as orch:
        base = _rss_kib(orch.pid)
        rec = Gate(hold="log", timeout=60)
        orch.submit("flood", {"lines": lines, "progress": str(progress)}, rec)
        seen = []

        def stalled():
            # The flood stopped moving: the model is blocked in print() (5 reports alike).
            text = progress.read_text().strip() if progress.exists() else ""
            if text.isdigit():  # read once: the model rewrites the file (empty for a moment)
                seen.append(int(text))
            return len(seen) >= 6 and len(set(seen[-6:])) == 1

        wait_until(stalled, 30, interval=0.05, message="the flood to be held back")
        held = seen[-1]
        # Held back after about two log batches (256 KiB each) plus the socket buffers:
        # ~1 MB, a fifth of the flood.
        assert held < lines // 4, f"{held} lines printed while the parent read nothing"
        grown = _rss_kib(orch.pid) - base
        assert grown < 4 * 1024, grown  # KiB: below the 5.5 MB produced
        rec.release.set()
        assert rec.wait(120) == ("succeeded", False)
        assert rec.outputs() == [f"printed {lines}"]
        assert rec.logs("stdout").count("\n") == lines  # nothing dropped


@pytest.mark.slow
def test_async_prediction_ignoring_cancel_is_stopped_and_its_neighbours_are_told_why():
    with running("async_misbehaving.py", cancel_grace_period=1.0) as orch:
        pid = orch.pid
        stubborn, neighbour = Recorder(), Recorder()
        orch.submit("stubborn", {"mode": "stubborn", "seconds": 60, "tag": "s"}, stubborn)
        orch.submit("neighbour", {"seconds": 60, "tag": "n"}, neighbour)
        assert stubborn.first_log.wait(10), stubborn.events
        assert neighbour.first_log.wait(10), neighbour.events
        t0 = time.monotonic()
        orch.cancel("stubborn")
        assert stubborn.wait(15) == ("canceled",)
        assert 0.9 < time.monotonic() - t0 < 8
        assert "s ignores the cancel" in stubborn.logs()
        kind, error = neighbour.wait(10)
        assert kind == "failed"
        assert error == "Worker restarted: prediction stubborn did not stop within 1s of being canceled"
        assert orch.wait_ready(30) and orch.pid != pid
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert predict(orch, "after", {"tag": "a"}).outputs() == ["done a"]
