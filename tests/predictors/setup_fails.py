"""Worker tests: setup() raises."""
from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self):
        print("loading weights")
        raise RuntimeError("setup exploded")

    def predict(self) -> str:
        return "never"
