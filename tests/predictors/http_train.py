"""HTTP tests: a class with predict() and train() (train mode calls train on every route)."""
from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, text: str = "p") -> str:
        return "predict:" + text

    def train(self, steps: int = Input(default=1, ge=1)) -> str:
        return f"trained {steps}"
