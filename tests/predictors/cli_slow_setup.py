"""CLI tests: a setup() that takes long enough to be interrupted with Ctrl-C."""

import time

from cog import BaseRunner


class Runner(BaseRunner):
    def setup(self) -> None:
        print("cli_slow_setup: setting up", flush=True)
        time.sleep(60)

    def run(self) -> str:
        return "never reached in the tests"
