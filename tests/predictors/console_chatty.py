"""Console-log tests: prints during setup and prediction, takes a Secret it never prints, fails on request."""

from cog import BaseRunner, Input, Secret


class Runner(BaseRunner):
    def setup(self) -> None:
        print("console_chatty: loading weights")
        print("console_chatty: setup done")

    def run(self, text: str = Input(default="hi"), api_key: Secret = Input(default=None),
            fail: bool = Input(default=False)) -> str:
        print(f"console_chatty: working on {text}")
        if api_key is not None and not api_key.get_secret_value():
            raise ValueError("empty key")
        if fail:
            raise RuntimeError(f"model gave up on {text}")
        return text.upper()
