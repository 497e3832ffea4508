"""Worker tests: floods its logs and reports its progress in a file, outside the logs."""
import threading

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, lines: int = 1000000, progress: str = "") -> str:
        done = [0]
        stop = threading.Event()

        def report():
            # A watchdog writing how far the flood got; it writes a file, not stdout.
            while not stop.wait(0.02):
                with open(progress, "w") as f:
                    f.write(str(done[0]))

        if progress:
            threading.Thread(target=report, daemon=True).start()
        pad = "x" * 100
        try:
            for i in range(lines):
                print(f"flood {i} {pad}")
                done[0] = i + 1
        finally:
            stop.set()
        return f"printed {lines}"
