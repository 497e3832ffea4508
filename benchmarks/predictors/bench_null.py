"""Benchmark predictor: the null prediction (no inputs, constant output).

Measures pure per-request server overhead: HTTP parsing, validation, dispatch
to the worker and back, and response encoding.
"""

from cog import BaseRunner


class Runner(BaseRunner):
    def setup(self) -> None:
        pass

    def run(self) -> str:
        return "ok"
