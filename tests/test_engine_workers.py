"""Several workers behind one engine (minicog.engine.engine): capacity, isolation of a
crash, per-worker devices, and what health reports."""

import logging
import os
import signal
import threading

import pytest

from minicog import errors
from engine_support import Recorder, predict, running
from http_helpers import call, running as serving
from support import wait_until


def _pid_of(rec):
    wait_until(lambda: "pid " in rec.logs("stdout"), 20, message="the model to print its pid")
    return int(rec.logs("stdout").split("pid ", 1)[1].split()[0])


def test_two_workers_run_two_sync_predictions_at_once(tmp_path):
    release = tmp_path / "release"  # both stay running until the test has looked
    with running("workers_identity.py", workers=2) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        assert orch.num_slots == 2 and len(set(orch.pids)) == 2
        a, b = Recorder(), Recorder()
        orch.submit("a", {"release_file": str(release)}, a)
        orch.submit("b", {"release_file": str(release)}, b)
        # Both are running at the same time: each printed from its own process.
        assert {_pid_of(a), _pid_of(b)} == set(orch.pids)
        assert orch.free_slots == 0
        try:
            orch.submit("c", {}, Recorder())
            raise AssertionError("a third prediction found a slot")
        except errors.AtCapacity:
            pass
        release.write_text("")
        assert a.wait(20)[0] == "succeeded" and b.wait(20)[0] == "succeeded"
        assert orch.free_slots == 2


@pytest.mark.slow
def test_a_killed_worker_fails_only_its_prediction_and_is_respawned_alone():
    with running("workers_identity.py", workers=2) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        victim, survivor = Recorder(), Recorder()
        run_v = orch.submit("victim", {"seconds": 30}, victim)
        run_s = orch.submit("survivor", {"seconds": 1.5}, survivor)
        assert run_v.worker != run_s.worker
        pid = _pid_of(victim)
        other_pid = _pid_of(survivor)
        os.kill(pid, signal.SIGKILL)
        assert victim.wait(20) == ("failed", "Worker crashed: killed by signal SIGKILL")
        assert orch.state == "READY"  # the other worker is still serving
        assert survivor.wait(20)[0] == "succeeded"
        assert survivor.outputs()[0]["pid"] == other_pid
        wait_until(lambda: orch.free_slots == 2 and pid not in orch.pids, 30, message="the respawned worker")
        assert other_pid in orch.pids  # the survivor's process was never touched
        states = orch.worker_states()
        assert [w["status"] for w in states] == ["READY", "READY"]


def test_each_worker_sees_only_its_own_device():
    with running("workers_identity.py", workers=2, devices=["0", "1"]) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        a, b = Recorder(), Recorder()
        orch.submit("a", {"seconds": 0.5}, a)
        orch.submit("b", {"seconds": 0.5}, b)
        seen = {a.wait(20) and a.outputs()[0]["device"], b.wait(20) and b.outputs()[0]["device"]}
        assert seen == {"0", "1"}
        assert [w["device"] for w in orch.worker_states()] == ["0", "1"]


def test_health_is_ready_while_one_worker_has_a_free_slot_and_lists_each_worker(tmp_path):
    release = tmp_path / "release"  # the slow prediction runs until the test has looked
    with serving("workers_identity.py", workers=2) as svc:
        wait_until(lambda: svc.engine.free_slots == 2, 30, message="both workers ready")
        body = call(svc, "GET", "/health-check").json()
        assert body["status"] == "READY"
        assert [w["status"] for w in body["workers"]] == ["READY", "READY"]
        assert [w["index"] for w in body["workers"]] == [0, 1]
        done = threading.Event()
        result = {}

        def slow():
            result["r"] = call(svc, "POST", "/predictions", {"id": "slow", "input": {"release_file": str(release)}},
                               timeout=60)
            done.set()

        threading.Thread(target=slow, daemon=True).start()
        wait_until(lambda: svc.engine.free_slots == 1, 10, message="one worker busy")
        body = call(svc, "GET", "/health-check").json()
        assert body["status"] == "READY"
        assert sorted(w["free_slots"] for w in body["workers"]) == [0, 1]
        release.write_text("")
        assert done.wait(20) and result["r"].json()["status"] == "succeeded"


def test_one_worker_keeps_the_single_worker_behaviour():
    with running("basic_echo.py") as orch:
        assert orch.workers == 1
        (only,) = orch.worker_states()
        assert only["status"] == "READY" and only["pid"] == orch.pid and "device" not in only
        assert predict(orch, "p", {"text": "x"}).outputs() == ["X"]


def test_the_embedding_api_takes_workers_too():
    import minicog
    from support import predictor

    with minicog.Model(predictor("workers_identity.py"), workers=2) as model:
        wait_until(lambda: model._orchestrator.free_slots == 2, 30, message="both workers ready")
        first, second = model.submit(seconds=1.0), model.submit(seconds=1.0)
        pids = {first.result(20)["pid"], second.result(20)["pid"]}
        assert len(pids) == 2  # they ran in two processes at once


@pytest.mark.slow
def test_a_worker_killed_after_its_cancel_grace_period_leaves_the_other_serving():
    with running("sleeps.py", workers=2, cancel_grace_period=0.5) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        stuck, other = Recorder(), Recorder()
        run_stuck = orch.submit("stuck", {"seconds": 30, "swallow": True}, stuck)
        run_other = orch.submit("other", {"seconds": 1.5}, other)
        assert run_stuck.worker != run_other.worker
        assert stuck.first_log.wait(20)  # it is inside the model, which swallows the cancel
        other_pid = orch.pids[run_other.worker]
        assert run_stuck.cancel()
        assert stuck.wait(20) == ("canceled",)  # killed after the grace period, still canceled
        assert orch.state == "READY"
        assert other.wait(20) == ("succeeded", False)
        wait_until(lambda: orch.free_slots == 2, 30, message="the killed worker to be back")
        assert orch.pids[run_other.worker] == other_pid  # only the stuck worker was restarted


def _starts(folder, device):
    """Setups the worker on *device* has begun (one line each, by setup_fails_on_restart.py)."""
    path = folder / f"starts-{device}"
    return path.read_text().split() if path.exists() else []


def _engine_state_changes(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "minicog.orchestrator" and r.getMessage().startswith("worker state ")]


@pytest.mark.slow
def test_a_failed_re_setup_of_one_worker_leaves_the_other_serving(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="minicog.orchestrator")
    # Worker 1 (device "1") fails its second setup; its third waits for the go file.
    env = {"W_STARTS_DIR": str(tmp_path), "W_FAIL_DEVICE": "1", "W_FAIL_STARTS": "2", "W_HOLD_START": "3"}
    with running("setup_fails_on_restart.py", workers=2, devices=["0", "1"], env=env) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        changes = len(_engine_state_changes(caplog))
        victim, other = orch.pids[1], orch.pids[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(_starts(tmp_path, "1")) == 3, 30, message="worker 1's third setup")
        # Its second setup failed; its third is held: worker 0 alone serves meanwhile.
        assert [w["status"] for w in orch.worker_states()] == ["READY", "STARTING"]
        assert orch.state == "READY" and orch.free_slots == 1
        during = predict(orch, "during", {})
        assert during.terminal == ("succeeded", False) and during.outputs()[0]["device"] == "0"
        # How the failed worker is reported: its setup error and its restart, by index.
        messages = [r.getMessage() for r in caplog.records if r.name == "minicog.orchestrator"]
        assert "worker 1: Setup failed: RuntimeError: weights for device 1 are gone (start 2)" in messages, messages
        assert "worker 1 could not set up again; restarting it" in messages, messages
        assert orch.restarts["crash"] == 2  # the kill, then the failed setup
        (tmp_path / "go").write_text("")
        wait_until(lambda: orch.free_slots == 2, 30, message="worker 1 back after its third setup")
        assert orch.pids[0] == other and victim not in orch.pids  # worker 0 was never touched
        # The engine never left READY (every engine state change is logged).
        assert _engine_state_changes(caplog)[changes:] == []
        recs = [Recorder(), Recorder()]
        runs = [orch.submit(f"after{i}", {"seconds": 0.5}, r) for i, r in enumerate(recs)]
        assert sorted(r.worker for r in runs) == [0, 1]
        assert sorted(r.wait(20) and r.outputs()[0]["device"] for r in recs) == ["0", "1"]


def test_a_worker_whose_re_setup_keeps_failing_is_defunct_alone(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="minicog.orchestrator")
    env = {"W_STARTS_DIR": str(tmp_path), "W_FAIL_DEVICE": "1", "W_FAIL_STARTS": "2-"}
    with running("setup_fails_on_restart.py", workers=2, devices=["0", "1"], env=env,
                 max_worker_restarts=1) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        changes = len(_engine_state_changes(caplog))
        os.kill(orch.pids[1], signal.SIGKILL)  # death 1: restarted; its setup fails: death 2
        wait_until(lambda: orch.worker_states()[1]["status"] == "DEFUNCT", 30, message="worker 1 DEFUNCT")
        assert len(_starts(tmp_path, "1")) == 2  # not restarted again
        assert orch.state == "READY" and orch.free_slots == 1
        assert predict(orch, "after", {}).outputs()[0]["device"] == "0"
        messages = [r.getMessage() for r in caplog.records if r.name == "minicog.orchestrator"]
        assert any(m.startswith("worker 1 could not set up again; 2 deaths within") and m.endswith("DEFUNCT")
                   for m in messages), messages
        assert _engine_state_changes(caplog)[changes:] == []
