"""Benchmark predictor: a @streaming token generator (10,000 tokens by default).

A sync generator, which both servers stream item by item (coglet collects
async generators before sending them).  Each token is a short string, as a
language model's would be.
"""

from cog import BaseRunner, ConcatenateIterator, Input, streaming


class Runner(BaseRunner):
    @streaming
    def run(self, n: int = Input(default=10000, ge=1, le=1000000)) -> ConcatenateIterator[str]:
        for i in range(n):
            yield f"t{i} "
