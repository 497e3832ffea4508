"""Worker tests: a sync healthcheck whose answer is chosen through a file next to the model."""
import os
import time

from cog import BasePredictor

MODE_FILE = os.environ.get("W_HEALTH_MODE_FILE", "")


class Predictor(BasePredictor):
    def healthcheck(self):
        mode = open(MODE_FILE).read().strip() if MODE_FILE and os.path.exists(MODE_FILE) else "ok"
        if mode == "false":
            return False
        if mode == "raise":
            raise ValueError("hc raised")
        if mode == "slow":
            time.sleep(30)
        return True

    def predict(self, seconds: float = 0.0) -> str:
        time.sleep(seconds)
        return "ok"
