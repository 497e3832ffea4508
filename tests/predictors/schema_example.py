"""The complete example of cog-behaviour.md section 9 (schema tests)."""

from typing import Optional

from cog import BaseRunner, Input, Path, Secret


class Runner(BaseRunner):
    def run(
        self,
        prompt: str = Input(description="Prompt text"),
        steps: int = Input(default=20, ge=1, le=100),
        scheduler: str = Input(default="ddim", choices=["ddim", "euler"]),
        image: Optional[Path] = Input(default=None, description="Init image"),
        api_key: Secret = Input(default=None),
        seed: int = Input(default=None),
    ) -> Path:
        return Path(__file__)
