"""A predictor with one input of every kind the browser page renders (tests/test_docs_page.py).

Its description holds markup on purpose: the page must show it as text.
"""

import time
from typing import Optional

from cog import BasePredictor, Input, Path, Secret


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="What to say <script>window.__pwned = 1</script> <b>bold?</b>"),
        title: str = Input(default="hello", description="A short line", max_length=40),
        steps: int = Input(default=20, ge=1, le=100, description="Number of steps"),
        scale: float = Input(default=7.5, ge=0.0, le=20.0),
        shout: bool = Input(default=False, description="Upper-case the answer"),
        flavour: str = Input(default="plain", choices=["plain", "fancy", "<odd>"]),
        size: int = Input(default=2, choices=[1, 2, 4]),
        image: Optional[Path] = Input(default=None, description="An image to describe"),
        words: list[str] = Input(default=["a", "b"], description="Some words"),
        numbers: list[int] = Input(default=None, description="Some numbers"),
        api_key: Secret = Input(default=None, description="Not shown"),
        seed: int = Input(default=None, description="Random seed"),
        sleep: float = Input(default=0.0, ge=0.0, le=60.0, description="Seconds to run"),
    ) -> str:
        print(f"starting {prompt!r}", flush=True)
        deadline = time.monotonic() + sleep
        while time.monotonic() < deadline:
            time.sleep(0.05)
        text = f"{title}: {prompt} x{steps} {flavour} {size} {words} {numbers} image={bool(image)} key={bool(api_key)}"
        print("done", flush=True)
        return text.upper() if shout else text
