"""Loader test: a Runner that defines both run() and predict(), and one that defines neither."""
from cog import BaseRunner


class Runner(BaseRunner):
    def run(self):
        return 1

    def predict(self):
        return 2


class Empty(BaseRunner):
    def setup(self):
        pass
