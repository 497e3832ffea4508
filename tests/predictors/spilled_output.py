"""Worker tests: says something, then returns an output too big to inline (it is spilled)."""
from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, size: int = 100000) -> str:
        print("spilling")
        return "y" * size
