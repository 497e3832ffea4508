"""Loader test: a plain Runner with setup, healthcheck and a typed run()."""
from cog import BaseRunner, Input


class Runner(BaseRunner):
    created = 0

    def __init__(self):
        type(self).created += 1
        self.ready = False

    def setup(self, weights=None):
        self.ready = True

    def healthcheck(self):
        return True

    def run(self, text: str = Input(description="Text")) -> str:
        return text.upper()
