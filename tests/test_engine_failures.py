"""Worker deaths, setup failures and restarts, with real worker subprocesses."""

import os
import time

import pytest

from engine_support import Recorder, predict, running
from support import predictor
from minicog import errors
from minicog.engine import Orchestrator
from minicog.settings import Settings


def _assert_reaped(pid):
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_os_exit_mid_prediction_fails_it_and_worker_is_respawned():
    with running("dies_mid_prediction.py") as orch:
        first_pid = orch.pid
        rec = predict(orch, "die", {"how": "exit"})
        assert rec.terminal == ("failed", "Worker crashed: exit code 7")
        assert "about to die\n" in rec.logs()
        assert orch.wait_ready(30)
        assert orch.pid != first_pid
        _assert_reaped(first_pid)
        ok = predict(orch, "ok", {})
        assert ok.outputs() == [f"alive {orch.pid}"]


def test_killed_by_signal_is_named():
    with running("dies_mid_prediction.py") as orch:
        rec = predict(orch, "die", {"how": "kill"})
        assert rec.terminal == ("failed", "Worker crashed: killed by signal SIGKILL")
        assert orch.wait_ready(30)


@pytest.mark.slow
def test_repeated_crashes_make_it_defunct():
    with running("dies_mid_prediction.py", max_worker_restarts=1) as orch:
        predict(orch, "d1", {"how": "exit"})
        assert orch.wait_ready(30)
        predict(orch, "d2", {"how": "exit"})
        assert orch.wait_state(lambda s: s != "READY" and s != "STARTING", 30) == "DEFUNCT"
        with pytest.raises(errors.ServiceUnavailable, match="DEFUNCT"):
            orch.submit("x", {}, Recorder())
        assert orch.healthcheck()[0] is False


def test_setup_exception_is_setup_failed_with_traceback():
    with running("setup_fails.py", ready=False) as orch:
        assert orch.wait_ready(30) is False
        assert orch.state == "SETUP_FAILED"
        assert orch.setup.status == "failed"
        assert orch.setup.error == "Setup failed: RuntimeError: setup exploded"
        logs = orch.setup.logs
        assert "loading weights\n" in logs and "Traceback (most recent call last)" in logs
        assert 'raise RuntimeError("setup exploded")' in logs
        with pytest.raises(errors.ServiceUnavailable, match="setup exploded"):
            orch.submit("x", {}, Recorder())


def test_load_error_is_setup_failed():
    with running("does_not_exist.py", ready=False) as orch:
        assert orch.wait_ready(30) is False
        assert orch.setup.error.startswith("Failed to load predictor: ")


@pytest.mark.slow
def test_setup_timeout_kills_the_worker():
    # The timeout counts from the spawn, interpreter start-up included: leave room for a busy machine.
    with running("setup_slow.py", ready=False, setup_timeout=3.0) as orch:
        pid = orch.pid
        assert orch.wait_ready(20) is False
        assert orch.state == "SETUP_FAILED"
        assert "timed out" in orch.setup.error
        assert "slow setup" in orch.setup.logs
        deadline = time.monotonic() + 10
        while orch.pid is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert orch.pid is None
        _assert_reaped(pid)


def test_concurrency_above_one_needs_async():
    with running("basic_echo.py", ready=False, max_concurrency=2) as orch:
        assert orch.wait_ready(30) is False
        assert orch.setup.error == "Setup failed: COG_MAX_CONCURRENCY > 1 requires an async run() or predict() method"


def test_settings_concurrency_beats_the_argument():
    with running("async_slots.py", max_concurrency=3, max_concurrency_arg=2) as orch:
        assert orch.num_slots == 3
    with running("async_slots.py", max_concurrency_arg=2) as orch:
        assert orch.num_slots == 2


def test_stop_while_predicting_fails_the_prediction_and_reaps():
    orch = Orchestrator(predictor("sleeps.py"), settings=Settings())
    orch.start()
    assert orch.wait_ready(30)
    pid = orch.pid
    rec = Recorder()
    orch.submit("s", {"seconds": 30}, rec)
    assert rec.first_log.wait(10)
    orch.stop(timeout=5)
    assert rec.done.is_set() and rec.terminal[0] == "failed"
    _assert_reaped(pid)


def test_weights_and_active_flag():
    with running("weights_env.py", weights="/models/w.bin") as orch:
        rec = predict(orch, "w", {})
        assert rec.outputs() == [{"weights": "/models/w.bin", "active": True}]
    import minicog
    assert minicog.active() is False  # only in the worker


def test_healthcheck_results(tmp_path):
    mode = tmp_path / "mode"
    with running("health_sync.py", env={"W_HEALTH_MODE_FILE": str(mode)}, healthcheck_timeout=0.5) as orch:
        assert orch.healthcheck() == (True, None)
        mode.write_text("false")
        assert orch.healthcheck() == (False, "Healthcheck failed: user-defined healthcheck returned False")
        mode.write_text("raise")
        assert orch.healthcheck() == (False, "Healthcheck failed: ValueError: hc raised")
        mode.write_text("slow")
        # A slow healthcheck times out and never blocks a prediction.
        rec = Recorder()
        orch.submit("p", {"seconds": 0}, rec)
        t0 = time.monotonic()
        assert orch.healthcheck() == (False, "Healthcheck failed: user-defined healthcheck timed out after 0.5 seconds")
        assert time.monotonic() - t0 < 8  # the worker's 0.5 s timeout, not the parent's 10 s
        assert rec.wait(10) == ("succeeded", False)


def test_async_healthcheck_runs_on_the_loop():
    with running("health_async.py") as orch:
        assert orch.has_healthcheck
        assert orch.healthcheck() == (True, None)
