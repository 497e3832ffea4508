"""Loader test: an async, concurrent, streaming Runner."""
from cog import BaseRunner, concurrent, streaming


class Runner(BaseRunner):
    async def setup(self):
        self.prefix = ">"

    @streaming
    @concurrent(max=3)
    async def run(self, text: str) -> str:
        return self.prefix + text
