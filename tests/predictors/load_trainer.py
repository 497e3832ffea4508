"""Loader test: training classes (minicog: a class needs only train() in train mode)."""
from cog import BaseRunner


class Trainer:
    def train(self, steps: int = 1) -> int:
        return steps


class Both(BaseRunner):
    def run(self) -> str:
        return "run"

    def train(self, steps: int = 1) -> str:
        return "train"
