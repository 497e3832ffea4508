"""Benchmark predictor: one prediction prints *mb* megabytes of log lines.

Lines are *width* characters plus the newline, printed one ``print()`` at a
time (the way a chatty model logs); run() returns how many it printed.
"""

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(self, mb: int = Input(default=50, ge=1, le=1024), width: int = Input(default=100, ge=1, le=100000)) -> int:
        line = "x" * width
        count = mb * 1024 * 1024 // (width + 1)
        for _ in range(count):
            print(line)
        return count
