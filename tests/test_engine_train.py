"""Train mode through the orchestrator, with real worker subprocesses."""

from engine_support import Recorder, predict, running
from support import predictor
from minicog.engine import Orchestrator
from minicog.settings import Settings


def _train_orch(ref: str, **settings) -> Orchestrator:
    orch = Orchestrator(predictor(ref), mode="train", settings=Settings(**settings))
    orch.start()
    return orch


def test_class_with_only_train_serves_training_and_failures_say_training():
    orch = _train_orch("train_entry_points.py:OnlyTrain")
    try:
        assert orch.wait_ready(30), orch.setup.logs
        assert "trainer setup\n" in orch.setup.logs
        schemas = orch.schema["components"]["schemas"]
        assert "TrainingInput" in schemas and "steps" in schemas["TrainingInput"]["properties"]
        rec = predict(orch, "t1", {"steps": 3})
        assert rec.terminal == ("succeeded", False)
        assert rec.outputs() == [6]
        assert rec.logs("stdout") == "training 3\n"
        bad = predict(orch, "t2", {"fail": True})
        assert bad.terminal == ("failed", "Training failed: RuntimeError: diverged")
        assert 'raise RuntimeError("diverged")' in bad.logs("stderr")
        # The slot stays healthy after a failed training.
        assert predict(orch, "t3", {}).outputs() == [2]
    finally:
        orch.stop(timeout=5)


def test_class_with_only_train_does_not_load_in_predict_mode():
    with running("train_entry_points.py:OnlyTrain", ready=False) as orch:
        assert orch.wait_ready(30) is False
        assert orch.state == "SETUP_FAILED"
        assert orch.setup.error.startswith("Failed to load predictor: ")


def test_async_trainer_runs_on_the_loop_and_can_be_canceled():
    orch = _train_orch("train_entry_points.py:AsyncTrain")
    try:
        assert orch.wait_ready(30), orch.setup.logs
        assert orch.is_async
        rec = predict(orch, "a1", {"steps": 5})
        assert rec.terminal == ("succeeded", False)
        assert rec.outputs() == ["async trained 5"]
        assert rec.logs("stdout") == "async training 5\n"
        slow = Recorder()
        orch.submit("a2", {"seconds": 60}, slow)
        assert slow.first_log.wait(10)
        assert orch.cancel("a2")
        assert slow.wait(10) == ("canceled",)
        assert "training saw CancelledError" in slow.logs("stderr")
    finally:
        orch.stop(timeout=5)


def test_training_function_reference():
    orch = _train_orch("train_entry_points.py:train")
    try:
        assert orch.wait_ready(30), orch.setup.logs
        assert predict(orch, "f", {"steps": 4}).outputs() == ["function trained 4"]
    finally:
        orch.stop(timeout=5)
