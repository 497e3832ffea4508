"""Loader test: @concurrent(max=2) on a sync run() fails when the file is imported (as in Cog)."""
from cog import BaseRunner, concurrent


class Runner(BaseRunner):
    @concurrent(max=2)
    def run(self) -> str:
        return "x"
