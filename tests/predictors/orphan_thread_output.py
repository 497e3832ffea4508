"""Worker tests: a thread that outlives its prediction prints once a file appears (orphan output)."""
import os
import threading
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, trigger: str) -> str:
        def late():
            deadline = time.monotonic() + 30
            while not os.path.exists(trigger) and time.monotonic() < deadline:
                time.sleep(0.01)
            print("orphan line from a finished prediction", flush=True)
            os.write(2, b"orphan fd line\n")

        threading.Thread(target=late, daemon=True).start()
        return "started"
