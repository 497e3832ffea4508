"""Loader test: both Runner and Predictor exist; Runner must win (with a warning)."""
from cog import BasePredictor, BaseRunner


class Runner(BaseRunner):
    def run(self) -> str:
        return "runner"


class Predictor(BasePredictor):
    def predict(self) -> str:
        return "predictor"
