"""An example Cog model for minicog: text utilities with constrained inputs and an optional file input.

Run it from this folder (cog.yaml names it)::

    python -m minicog predict -i text="Hello, minicog" -i transform=reverse
    python -m minicog serve --port 5000
"""

from typing import Optional

from cog import BaseRunner, Input, Path


class Runner(BaseRunner):
    def setup(self) -> None:
        # Real models load weights here; setup() runs once, before the first prediction.
        self.transforms = {
            "upper": str.upper,
            "lower": str.lower,
            "title": str.title,
            "reverse": lambda s: s[::-1],
        }
        print("example: ready")

    def run(
        self,
        text: str = Input(description="Text to transform (ignored when a file is given)", default="Hello, minicog"),
        file: Optional[Path] = Input(description="A text file to transform instead", default=None),
        transform: str = Input(description="What to do", default="upper", choices=["upper", "lower", "title", "reverse"]),
        repeat: int = Input(description="How many times to repeat the result", default=1, ge=1, le=10),
    ) -> str:
        source = file.read_text(encoding="utf-8") if file is not None else text
        print(f"example: {transform} on {len(source)} characters")
        return "\n".join([self.transforms[transform](source)] * repeat)
