"""Loader test: imports a sibling module from its own folder."""
from cog import BaseRunner
from load_sibling_helper import VALUE


class Runner(BaseRunner):
    def run(self) -> str:
        return VALUE
