"""Loader test: the deprecated spelling (Predictor / BasePredictor / predict)."""
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, n: int) -> int:
        return n + 1
