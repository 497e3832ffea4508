"""Worker tests: prints and records metrics without pause, so a cancel lands inside minicog's sends."""
import sys

from cog import BasePredictor, current_scope


class Predictor(BasePredictor):
    def predict(self, n: int = 10000000, big: int = 0) -> str:
        scope = current_scope()
        for i in range(n):
            print(f"line {i} " + "y" * (big or i % 300))
            if i % 7 == 0:
                sys.stderr.write(f"partial {i} ")
            if i % 5 == 0:
                scope.record_metric("count", 1, "increment")
        return "never canceled"
