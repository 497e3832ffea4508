"""Worker tests: setup(weights) gets COG_WEIGHTS; minicog.active() is true in the worker."""
import minicog
from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self, weights=None):
        self.weights = weights

    def predict(self) -> dict:
        return {"weights": self.weights, "active": minicog.active()}
