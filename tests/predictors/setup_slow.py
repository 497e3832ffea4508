"""Worker tests: setup() takes longer than the setup timeout."""
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self):
        print("slow setup")
        time.sleep(60)

    def predict(self) -> str:
        return "never"
