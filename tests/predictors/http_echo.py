"""HTTP tests: echoes, prints, records metrics, fails or sleeps on request (a sync predictor)."""
import sys
import time

from cog import BasePredictor, Input, current_scope


class Predictor(BasePredictor):
    def setup(self):
        print("http_echo setup line")

    def predict(self, text: str = Input(default="hi", max_length=50), n: int = Input(default=1, ge=1, le=10),
                sleep: float = 0.0, fail: bool = False, metric: int = 0) -> str:
        print(f"echo {text}")
        print("to stderr", file=sys.stderr)
        if metric:
            current_scope().record_metric("tokens", metric, "increment")
            current_scope().record_metric("timing.pre", 0.25)
            current_scope().record_metric("lst", 1, "append")
        deadline = time.monotonic() + sleep
        while time.monotonic() < deadline:
            time.sleep(0.01)
        if fail:
            raise ValueError("boom")
        return text * n
