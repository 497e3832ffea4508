"""CLI tests: a streaming predictor; `pause` seconds between tokens, `marker` written on cancel."""

import time
from typing import Iterator

from cog import BaseRunner, CancelationException, ConcatenateIterator, Input, streaming


class Runner(BaseRunner):
    @streaming
    def run(
        self,
        count: int = Input(default=5, ge=1),
        pause: float = Input(default=0.0, ge=0.0),
        marker: str = Input(default=None, description="file written when the prediction is canceled"),
    ) -> ConcatenateIterator[str]:
        try:
            for i in range(count):
                print(f"cli_stream: token {i}", flush=True)
                yield f"tok{i} "
                if pause:
                    time.sleep(pause)
        except CancelationException:
            if marker:
                with open(marker, "w") as f:
                    f.write("canceled")
            raise


class Items(BaseRunner):
    def run(self, count: int = Input(default=3, ge=1)) -> Iterator[dict]:
        for i in range(count):
            yield {"i": i}
