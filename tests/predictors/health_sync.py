"""Worker tests: a sync healthcheck whose answer is chosen through a file next to the model.

In mode "slow" the healthcheck first creates ``W_HEALTH_STARTED_FILE`` (when set), so a
test knows it is running, then sleeps 30 s.  predict() prints a line before it sleeps.
"""
import os
import time

from cog import BasePredictor

MODE_FILE = os.environ.get("W_HEALTH_MODE_FILE", "")
STARTED_FILE = os.environ.get("W_HEALTH_STARTED_FILE", "")


class Predictor(BasePredictor):
    def healthcheck(self):
        mode = open(MODE_FILE).read().strip() if MODE_FILE and os.path.exists(MODE_FILE) else "ok"
        if mode == "false":
            return False
        if mode == "raise":
            raise ValueError("hc raised")
        if mode == "slow":
            if STARTED_FILE:
                open(STARTED_FILE, "w").close()
            time.sleep(30)
        return True

    def predict(self, seconds: float = 0.0) -> str:
        print("predicting", flush=True)
        time.sleep(seconds)
        return "ok"
