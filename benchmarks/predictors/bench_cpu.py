"""Benchmark predictor: about 20 ms of pure-Python CPU work per prediction (sync).

It holds the GIL the whole time, so one worker process uses one core at most:
what ``serve --workers N`` is for.
"""

from cog import BaseRunner

# Loop iterations for ~20 ms of CPU time under CPython 3.11 on the machine this was
# measured on (time.process_time(); 200,000 took 32 ms there).
_ITERATIONS = 130_000


class Runner(BaseRunner):
    def setup(self) -> None:
        pass

    def run(self) -> int:
        total = 0
        for i in range(_ITERATIONS):
            total += i * i % 7
        return total
