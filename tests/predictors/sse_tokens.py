"""SSE flow tests: a @streaming generator of n tokens, each `size` characters or more.

Waits `wait_first` seconds before the first token so a second reader can attach first.
"""
import time

from cog import BasePredictor, Input, streaming


class Predictor(BasePredictor):
    @streaming
    def predict(self, n: int = Input(default=10000), size: int = 0, wait_first: float = 0.0):
        if wait_first:
            end = time.monotonic() + wait_first
            while time.monotonic() < end:
                time.sleep(0.01)
        pad = "x" * size
        for i in range(n):
            yield f"t{i} {pad}"
