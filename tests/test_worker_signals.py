"""The worker leaves SIGINT/SIGTERM to its parent, without passing that on to the model's children."""

from engine_support import predict, running


def test_model_child_processes_keep_the_default_sigterm():
    # SIG_IGN would be inherited across exec; the worker's no-op handler is not.
    with running("child_signal.py") as orch:
        rec = predict(orch, "p1", {})
        assert rec.terminal[0] == "succeeded", rec.events
        assert rec.outputs() == ["True"]
