"""Several-worker tests: says which process and which device it runs on, after
printing its pid and sleeping *seconds* (so a test can kill that worker mid-run)."""
import os
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES")

    def predict(self, seconds: float = 0.0) -> dict:
        print(f"pid {os.getpid()}", flush=True)
        time.sleep(seconds)
        return {"pid": os.getpid(), "device": self.device}
