"""Worker tests: sleeps in time.sleep (interrupted by cancel), or swallows the cancel."""
import time

from cog import BasePredictor, CancelationException


class Predictor(BasePredictor):
    def predict(self, seconds: float = 30.0, swallow: bool = False) -> str:
        print("sleeping", flush=True)
        start = time.monotonic()
        if swallow:
            try:
                time.sleep(seconds)
            except CancelationException:
                print("swallowed the cancel")
            time.sleep(seconds)
            return "woke up"
        time.sleep(seconds)
        return f"slept {time.monotonic() - start:.1f}"
