"""Logs interleaved with outputs and metrics (and across stdout/stderr), to check their order."""
import sys

from cog import BasePredictor, current_scope


class Predictor(BasePredictor):
    def predict(self, n: int = 5):
        for i in range(n):
            print(f"before output {i}")
            sys.stderr.write(f"stderr {i}\n")
            print(f"before metric {i}")
            current_scope().record_metric("step", i)
            yield i
        print("last words", end="")
