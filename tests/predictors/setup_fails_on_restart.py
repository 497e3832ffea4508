"""Several-worker tests: setup() fails on chosen (re)starts of one worker only.

Each worker is told apart by its CUDA_VISIBLE_DEVICES (the test gives each its own).
Every setup appends a line to ``<W_STARTS_DIR>/starts-<device>``; the worker whose
device is ``W_FAIL_DEVICE`` raises in setup on the starts listed in ``W_FAIL_STARTS``
(``"2"``: only its second start; ``"2-"``: its second start and every later one).
With ``W_HOLD_START`` = N, that worker's N-th setup waits until the file
``<W_STARTS_DIR>/go`` exists, so a test can look at the engine while it sets up.
"""
import os
import time

from cog import BasePredictor

HOLD_WAIT = 60.0  # seconds a held setup waits for the test's go file


def _fails(start: int, spec: str) -> bool:
    for part in filter(None, spec.split(",")):
        if part.endswith("-"):
            if start >= int(part[:-1]):
                return True
        elif start == int(part):
            return True
    return False


class Predictor(BasePredictor):
    def setup(self) -> None:
        folder = os.environ["W_STARTS_DIR"]
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        with open(os.path.join(folder, f"starts-{self.device}"), "a") as f:
            f.write(f"{os.getpid()}\n")
        with open(os.path.join(folder, f"starts-{self.device}")) as f:
            start = len(f.read().split())
        if self.device != os.environ.get("W_FAIL_DEVICE"):
            return
        if _fails(start, os.environ.get("W_FAIL_STARTS", "")):
            print(f"worker on device {self.device}: setup start {start} fails")
            raise RuntimeError(f"weights for device {self.device} are gone (start {start})")
        if str(start) == os.environ.get("W_HOLD_START"):
            deadline = time.monotonic() + HOLD_WAIT
            while not os.path.exists(os.path.join(folder, "go")):
                if time.monotonic() > deadline:
                    raise TimeoutError("the test never said go")
                time.sleep(0.01)

    def predict(self, seconds: float = 0.0) -> dict:
        time.sleep(seconds)
        return {"pid": os.getpid(), "device": self.device}
