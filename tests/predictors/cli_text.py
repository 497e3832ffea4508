"""CLI tests: a plain string output, and a logged line on stderr."""

import sys

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def setup(self) -> None:
        print("cli_text: setting up")

    def run(self, name: str = Input(default="world")) -> str:
        print("cli_text: log line on stdout")
        print("cli_text: log line on stderr", file=sys.stderr)
        return f"hello {name}"
