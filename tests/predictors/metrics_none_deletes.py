"""record_metric(name, None) deletes the metric (Cog's docs), in a sync and an async model."""
from cog import BasePredictor, current_scope


def _record(runner):
    runner.record_metric("tokens", 3)
    runner.record_metric("tokens", None)                    # gone
    runner.record_metric("kept", 1)
    runner.record_metric("timing.pre", 0.5)
    runner.record_metric("timing.gone", 2)
    current_scope().record_metric("timing.gone", None)     # a nested leaf
    runner.record_metric("steps", "a", mode="append")
    runner.record_metric("steps", None, mode="append")      # None deletes in any mode
    runner.record_metric("steps", 7)                        # the type lock went with it
    return "ok"


class Predictor(BasePredictor):
    def predict(self) -> str:
        return _record(self)


class AsyncPredictor(BasePredictor):
    async def predict(self) -> str:
        return _record(self)
