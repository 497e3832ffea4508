"""Worker tests: the model replaces sys.stdout with its own stream."""
import io
import sys

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self) -> str:
        mine = io.StringIO()
        saved = sys.stdout
        sys.stdout = mine
        print("captured twice")
        sys.stdout = saved
        print("back to normal")
        return mine.getvalue()
