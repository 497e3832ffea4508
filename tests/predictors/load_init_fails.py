"""Loader test: the class cannot be created."""
from cog import BaseRunner


class Runner(BaseRunner):
    def __init__(self):
        raise RuntimeError("no GPU here")

    def run(self) -> str:
        return "x"
