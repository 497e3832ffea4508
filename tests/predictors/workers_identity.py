"""Several-worker tests: says which process and which device it runs on, after
printing its pid and sleeping *seconds* (so a test can kill that worker mid-run).
With *release_file*, it then also waits until that file exists, so a test can hold
predictions running for as long as it looks at the engine."""
import os
import time

from cog import BasePredictor

RELEASE_WAIT = 60.0  # seconds a held prediction waits for its release file


class Predictor(BasePredictor):
    def setup(self) -> None:
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES")

    def predict(self, seconds: float = 0.0, release_file: str = "") -> dict:
        print(f"pid {os.getpid()}", flush=True)
        time.sleep(seconds)
        if release_file:
            deadline = time.monotonic() + RELEASE_WAIT
            while not os.path.exists(release_file):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{release_file} never appeared")
                time.sleep(0.01)
        return {"pid": os.getpid(), "device": self.device}
