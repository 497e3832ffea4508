"""CLI tests: outputs Cog's CLI prints in its own ways (None, numbers, HTML characters), an
environment reader, the context's API token, and a trainer whose output is a weights file."""

import os
import tempfile
from typing import Any

from cog import BaseRunner, Input, Path, current_scope


class Nothing(BaseRunner):
    def run(self) -> Any:
        print("cli_outputs: returning None")
        return None


class Numbers(BaseRunner):
    """A dict with keys out of order, a whole float and characters Go's encoder escapes."""

    def run(self) -> dict:
        return {"zeta": 3.0, "alpha": "<b>&</b>", "small": 0.00001}


class Env(BaseRunner):
    def run(self, name: str = Input(description="variable to read")) -> str:
        return os.environ.get(name, "<unset>")


class Token(BaseRunner):
    def run(self) -> str:
        return current_scope().context.get("replicate_api_token", "<no token>")


class Weights(BaseRunner):
    def train(self, steps: int = Input(default=1, ge=1)) -> Path:
        f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        with f:
            f.write(f"weights after {steps} steps")
        return Path(f.name)
