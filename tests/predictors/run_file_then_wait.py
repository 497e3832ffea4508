"""Run handle tests: yields a file output first (written into the run's folder, so
the folder exists), then sleeps (a cancel interrupts it) before it ends."""
import io
import time
from typing import Iterator

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self, seconds: float = 0.0) -> Iterator[Path]:
        yield io.BytesIO(b"kept until the run is released")
        time.sleep(seconds)
