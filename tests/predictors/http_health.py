"""HTTP tests: healthcheck() driven by a marker file next to the process' cwd (HTTP_HEALTH_FILE)."""
import os
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, sleep: float = 0.0) -> str:
        deadline = time.monotonic() + sleep
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return "ok"

    def healthcheck(self):
        marker = os.environ.get("HTTP_HEALTH_FILE")
        if marker and os.path.exists(marker):
            raise RuntimeError("disk on fire")
        return True
