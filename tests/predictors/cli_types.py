"""CLI tests: one input of each JSON type, a choices input, a list, an optional file; returns a dict."""

from typing import List

from cog import BaseRunner, Input, Path


class Runner(BaseRunner):
    def run(
        self,
        text: str = Input(description="some text"),
        n: int = Input(default=1, ge=0, le=10),
        ratio: float = Input(default=0.5),
        flag: bool = Input(default=False),
        tags: List[str] = Input(default=[]),
        numbers: List[int] = Input(default=[]),
        color: str = Input(default="red", choices=["red", "green"]),
        doc: Path = Input(default=None, description="an optional file"),
    ) -> dict:
        print(f"cli_types: got text={text!r}")
        return {
            "text": text, "n": n, "ratio": ratio, "flag": flag, "tags": tags, "numbers": numbers,
            "color": color, "doc": None if doc is None else doc.read_text(),
        }
