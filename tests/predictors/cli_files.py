"""CLI tests: file outputs, one (Single) or a list (Several)."""

import tempfile
from typing import List

from cog import BaseRunner, Input, Path


def _write(text: str, ext: str) -> Path:
    f = tempfile.NamedTemporaryFile("w", suffix=ext, delete=False)
    with f:
        f.write(text)
    return Path(f.name)


class Single(BaseRunner):
    def run(self, text: str = Input(default="single file")) -> Path:
        return _write(text, ".txt")


class Several(BaseRunner):
    def run(self, count: int = Input(default=3, ge=1, le=10)) -> List[Path]:
        return [_write(f"file {i}", ".txt") for i in range(count)]
