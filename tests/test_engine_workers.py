"""Several workers behind one engine (minicog.engine.engine): capacity, isolation of a
crash, per-worker devices, and what health reports."""

import os
import signal
import threading

from minicog import errors
from engine_support import Recorder, predict, running
from http_helpers import call, running as serving
from support import wait_until


def _pid_of(rec):
    wait_until(lambda: "pid " in rec.logs("stdout"), 20, message="the model to print its pid")
    return int(rec.logs("stdout").split("pid ", 1)[1].split()[0])


def test_two_workers_run_two_sync_predictions_at_once():
    with running("workers_identity.py", workers=2) as orch:
        wait_until(lambda: orch.free_slots == 2, 30, message="both workers ready")
        assert orch.num_slots == 2 and len(set(orch.pids)) == 2
        a, b = Recorder(), Recorder()
        orch.submit("a", {"seconds": 1.0}, a)
        orch.submit("b", {"seconds": 1.0}, b)
        # Both are running at the same time: each printed from its own process.
        assert {_pid_of(a), _pid_of(b)} == set(orch.pids)
        assert orch.free_slots == 0
        try:
            orch.submit("c", {}, Recorder())
            raise AssertionError("a third prediction found a slot")
        except errors.AtCapacity:
            pass
        assert a.wait(20)[0] == "succeeded" and b.wait(20)[0] == "succeeded"
        assert orch.free_slots == 2


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


def test_health_is_ready_while_one_worker_has_a_free_slot_and_lists_each_worker():
    with serving("workers_identity.py", workers=2) as svc:
        wait_until(lambda: svc.engine.free_slots == 2, 30, message="both workers ready")
        body = call(svc, "GET", "/health-check").json()
        assert body["status"] == "READY"
        assert [w["status"] for w in body["workers"]] == ["READY", "READY"]
        assert [w["index"] for w in body["workers"]] == [0, 1]
        done = threading.Event()
        result = {}

        def slow():
            result["r"] = call(svc, "POST", "/predictions", {"id": "slow", "input": {"seconds": 2}})
            done.set()

        threading.Thread(target=slow, daemon=True).start()
        wait_until(lambda: svc.engine.free_slots == 1, 10, message="one worker busy")
        body = call(svc, "GET", "/health-check").json()
        assert body["status"] == "READY"
        assert sorted(w["free_slots"] for w in body["workers"]) == [0, 1]
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
