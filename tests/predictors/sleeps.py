"""Worker tests: sleeps in time.sleep (interrupted by cancel), or swallows the cancel."""
import time

from cog import BasePredictor, CancelationException


class Predictor(BasePredictor):
    def predict(self, seconds: float = 30.0, swallow: bool = False) -> str:
        start = time.monotonic()
        if swallow:
            try:
                # Printed inside the try: a cancel that lands while printing is swallowed too.
                print("sleeping", flush=True)
                time.sleep(seconds)
            except CancelationException:
                print("swallowed the cancel")
            time.sleep(seconds)
            return "woke up"
        print("sleeping", flush=True)
        time.sleep(seconds)
        return f"slept {time.monotonic() - start:.1f}"
