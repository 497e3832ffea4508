"""HTTP tests: setup() prints then raises."""
from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self):
        print("about to fail")
        raise RuntimeError("weights missing")

    def predict(self) -> str:
        return "never"
