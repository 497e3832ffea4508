"""A model without inputs, whose output is a JSON object (the page pretty-prints it)."""

from cog import BaseRunner


class Runner(BaseRunner):
    def run(self) -> dict:
        return {"answer": 42, "nested": {"ok": True, "items": [1, 2, 3]}}
