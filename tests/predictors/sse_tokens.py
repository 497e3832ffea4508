"""SSE flow tests: a @streaming generator of n tokens, each `size` characters or more.

Waits `wait_first` seconds before the first token so a second reader can attach first.
With `pace_file`, it stops after every `burst` tokens until that file holds a number
at least as large as the tokens sent so far: the test writes how many it has read, so
the reader is never more than one burst behind, however the machine schedules threads.
"""
import time

from cog import BasePredictor, Input, streaming

PACE_WAIT = 60.0  # seconds a paced burst waits for the reader before the prediction fails


def _wait_for_reader(pace_file: str, sent: int) -> None:
    deadline = time.monotonic() + PACE_WAIT
    while time.monotonic() < deadline:
        try:
            with open(pace_file) as f:
                text = f.read().strip()
        except OSError:
            text = ""
        if text.isdigit() and int(text) >= sent:
            return
        time.sleep(0.005)
    raise TimeoutError(f"the reader did not report {sent} tokens read within {PACE_WAIT:g}s")


class Predictor(BasePredictor):
    @streaming
    def predict(self, n: int = Input(default=10000), size: int = 0, wait_first: float = 0.0,
                pace_file: str = "", burst: int = 1000):
        if wait_first:
            end = time.monotonic() + wait_first
            while time.monotonic() < end:
                time.sleep(0.01)
        pad = "x" * size
        for i in range(n):
            yield f"t{i} {pad}"
            if pace_file and (i + 1) % burst == 0 and i + 1 < n:
                _wait_for_reader(pace_file, i + 1)
