"""Benchmark/test predictor: does nothing, or streams n items."""
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, n: int = 0):
        if n:
            return (i for i in range(n))
        return None
