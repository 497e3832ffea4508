"""Worker recycling (MINICOG_WORKER_MAX_PREDICTIONS / _MAX_AGE / _MAX_RSS) with real workers:
no prediction fails, a fresh worker sets up again, recycles are logged and counted as such."""

import concurrent.futures
import logging
import threading
import time

import pytest

from http_helpers import call, running
from minicog.settings import Settings
from support import wait_until


def predict(svc, body=None, timeout=60.0):
    """A sync prediction; a 409 or 503 (no slot now, or the replacement still setting up)
    is retried, as a client does: those requests were never accepted, so nothing failed."""
    deadline = time.monotonic() + timeout
    while True:
        r = call(svc, "POST", "/predictions", {"input": body or {}})
        if r.status not in (409, 503):
            assert r.status == 200, r
            return r.json()
        assert time.monotonic() < deadline, r
        time.sleep(0.05)


def pid_of(result) -> int:
    assert result["status"] == "succeeded", result
    return int(result["output"].split(":")[0])


def test_a_worker_is_replaced_after_max_predictions(caplog):
    with caplog.at_level(logging.INFO, logger="minicog"):
        with running("recycle_pid.py", settings=dict(worker_max_predictions=3)) as svc:
            pids = [pid_of(predict(svc)) for _ in range(7)]
            restarts = dict(svc.engine.restarts)
            metrics = call(svc, "GET", "/metrics").body.decode()
    assert pids[0] == pids[1] == pids[2] != pids[3]
    assert pids[3] == pids[4] == pids[5] != pids[6] and len(set(pids)) == 3
    assert restarts["recycle"] == 2 and restarts["crash"] == 0
    assert 'minicog_worker_restarts_total{cause="recycle"} 2\n' in metrics
    assert 'minicog_worker_restarts_total{cause="crash"} 0\n' in metrics
    assert "recycled: it ran 3 predictions" in caplog.text or "is recycled: it ran 3 predictions" in caplog.text


@pytest.mark.slow
def test_predictions_running_on_a_retiring_worker_finish_there():
    with running("recycle_pid.py", settings=dict(worker_max_predictions=1)) as svc:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(call, svc, "POST", "/predictions", {"input": {"sleep": s}}) for s in (0.2, 1.5, 1.5)]
            results = [f.result(timeout=60) for f in futures]
        assert [r.status for r in results] == [200, 200, 200]
        outs = [r.json() for r in results]
        assert all(o["status"] == "succeeded" for o in outs), outs
        # All three were taken by the first worker; it retired after the first ended and
        # finished the other two before it was replaced.
        assert len({pid_of(o) for o in outs}) == 1
        after = pid_of(predict(svc))
        assert after != pid_of(outs[0])
        assert svc.engine.restarts["recycle"] >= 1


@pytest.mark.slow
def test_age_and_rss_limits_are_checked_between_predictions():
    with running("recycle_pid.py", settings=dict(worker_max_age=1.0)) as svc:
        first = svc.engine.pid
        # Past its age before any prediction ended (spawned before it was ready): nothing
        # happens to an idle worker, however long setup took on a loaded machine.
        t0 = time.monotonic()
        wait_until(lambda: time.monotonic() - t0 > 1.2, message="the worker to grow older than its limit")
        assert svc.engine.pid == first and svc.engine.restarts["recycle"] == 0
        assert pid_of(predict(svc)) == first  # its age is looked at when this one ends
        assert pid_of(predict(svc)) != first
    with running("recycle_pid.py", settings=dict(worker_max_rss=150.0)) as svc:
        first = pid_of(predict(svc))
        assert pid_of(predict(svc, {"grow_mb": 200})) == first
        assert pid_of(predict(svc)) != first


def test_with_two_workers_one_recycles_at_a_time_and_health_stays_ready():
    with running("recycle_pid.py", settings=dict(worker_max_predictions=3), workers=2) as svc:
        wait_until(lambda: [w["status"] for w in call(svc, "GET", "/health-check").json()["workers"]] == ["READY"] * 2,
                   timeout=60, message="both workers ready")
        seen, stop = [], threading.Event()

        def watch():
            while not stop.is_set():
                seen.append(call(svc, "GET", "/health-check").json())
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            outs: list = []

            def client():
                # Until three recycles happened and a fourth process answered (bounded by a
                # count): a recycle is counted when the old process exits, before its
                # replacement answered anyone, so recycles alone do not mean four processes.
                while (svc.engine.restarts["recycle"] < 3 or len({pid_of(o) for o in outs}) < 4) \
                        and len(outs) < 400:
                    outs.append(predict(svc, {"sleep": 0.05}))

            clients = [threading.Thread(target=client) for _ in range(2)]
            for t in clients:
                t.start()
            for t in clients:
                t.join(120)
        finally:
            stop.set()
            watcher.join(10)
        assert all(o["status"] == "succeeded" for o in outs)
        assert svc.engine.restarts["recycle"] >= 3
        assert len({pid_of(o) for o in outs}) >= 4  # each worker was replaced at least once
        assert {h["status"] for h in seen} <= {"READY", "BUSY"}
        # Never both workers out at once.
        assert all(sum(w["status"] == "READY" for w in h["workers"]) >= 1 for h in seen)
        assert svc.engine.restarts["recycle"] >= 2 and svc.engine.restarts["crash"] == 0


def test_limits_are_read_from_the_environment():
    s = Settings.from_env({"MINICOG_WORKER_MAX_PREDICTIONS": "100", "MINICOG_WORKER_MAX_AGE": "3600",
                           "MINICOG_WORKER_MAX_RSS": "2048"})
    assert (s.worker_max_predictions, s.worker_max_age, s.worker_max_rss) == (100, 3600.0, 2048.0)
    assert Settings.from_env({"MINICOG_WORKER_MAX_PREDICTIONS": "0"}).worker_max_predictions is None
