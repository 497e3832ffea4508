"""HTTP tests: setup() waits until the file named by HTTP_SETUP_GATE exists (the test opens the gate)."""
import os
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self):
        print("waiting for the gate")
        gate = os.environ["HTTP_SETUP_GATE"]
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)

    def predict(self, sleep: float = 0.0) -> str:
        end = time.monotonic() + sleep
        while time.monotonic() < end:
            time.sleep(0.01)
        return "gated"
