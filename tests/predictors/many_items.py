"""Worker tests: a generator yielding many items; can be cancelled between items."""
import time

from cog import BasePredictor, CancelationException


class Predictor(BasePredictor):
    def predict(self, n: int = 10000, gap: float = 0.0, size: int = 0, marker: str = ""):
        try:
            for i in range(n):
                yield ("x" * size) if size else i
                if gap:
                    time.sleep(gap)
        except CancelationException:
            if marker:
                with open(marker, "w") as f:
                    f.write("canceled")
            raise
