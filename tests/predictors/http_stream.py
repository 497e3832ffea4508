"""HTTP tests: a @streaming generator (SSE allowed); prints and records a metric per item."""
import time

from cog import BasePredictor, Input, current_scope, streaming


class Predictor(BasePredictor):
    @streaming
    def predict(self, n: int = Input(default=3), gap: float = 0.0, wait_first: float = 0.0,
                fail_at: int = -1):
        if wait_first:
            end = time.monotonic() + wait_first
            while time.monotonic() < end:
                time.sleep(0.01)
        for i in range(n):
            if i == fail_at:
                raise RuntimeError("stream broke")
            print(f"tick {i}")
            current_scope().record_metric("count", 1, "increment")
            yield f"tok{i}"
            if gap:
                end = time.monotonic() + gap
                while time.monotonic() < end:
                    time.sleep(0.005)
