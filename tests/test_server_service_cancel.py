"""A cancel that reaches the service in the window between registering a prediction and
dispatching it to the worker must still stop the model (H9)."""

import threading
import time

from http_helpers import call, running, wait_until
from minicog.server.http import PredictionRequest


def test_cancel_while_the_prediction_is_not_yet_dispatched_stops_it():
    with running("w_sleep.py") as svc:
        orch = svc.orchestrator
        box = {}

        def create():
            box["pred"], _ = svc.create("prediction", PredictionRequest(id="early", input={"seconds": 60}),
                                        sse=False, headers={})

        # Holding the orchestrator's lock parks create() inside Orchestrator.submit, after the
        # service has registered the record: the window an HTTP cancel can fall into.
        with orch._lock:
            creator = threading.Thread(target=create)
            creator.start()
            wait_until(lambda: svc.find_inflight("early"), 10, message="the record to be registered")
            assert orch.in_flight() == []  # the orchestrator does not know it yet
            assert svc.cancel("early") is True  # what POST /predictions/early/cancel calls
        creator.join(10)
        pred = box["pred"]
        t0 = time.monotonic()
        assert pred.wait(10), "the cancel was lost: the model ran on"
        assert pred.status == "canceled"
        pred.release()  # the reference create() took for its caller
        assert time.monotonic() - t0 < 5
        # The service goes on.
        r = call(svc, "POST", "/predictions", {"input": {"seconds": 0}})
        assert r.status == 200 and r.json()["status"] == "succeeded"
