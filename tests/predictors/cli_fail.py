"""CLI tests: a prediction that logs and then fails."""

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(self, why: str = Input(default="on purpose")) -> str:
        print("cli_fail: about to fail")
        raise ValueError(f"the model failed {why}")
