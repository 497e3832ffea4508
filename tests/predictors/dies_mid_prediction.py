"""Worker tests: dies in the middle of a prediction (os._exit or a signal)."""
import os
import signal
import time

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self):
        print(f"setup pid {os.getpid()}")

    def predict(self, how: str = "none") -> str:
        print("about to die")
        if how == "exit":
            os._exit(7)
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(5)
        return f"alive {os.getpid()}"
