"""Worker tests: training entry points - a class with only train(), an async trainer, a function."""
import asyncio
import sys

from cog import Input


class OnlyTrain:
    """No run()/predict(): only loadable in train mode."""

    def setup(self):
        print("trainer setup")

    def train(self, steps: int = Input(default=1, ge=1), fail: bool = False) -> int:
        print(f"training {steps}")
        if fail:
            raise RuntimeError("diverged")
        return steps * 2


class AsyncTrain:
    async def setup(self):
        self.loop = asyncio.get_running_loop()

    async def train(self, steps: int = 1, seconds: float = 0.0) -> str:
        assert asyncio.get_running_loop() is self.loop  # setup and training share the worker's loop
        print(f"async training {steps}")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            print("training saw CancelledError", file=sys.stderr)
            raise
        return f"async trained {steps}"


def train(steps: int = 1) -> str:
    return f"function trained {steps}"
