"""Worker recycling tests: answers the worker's pid and how many predictions it ran; can
hold on to memory (grow_mb) to push its RSS up.  Async with 4 slots, so a worker can be
asked to retire while other predictions still run on it."""
import asyncio
import os

from cog import BasePredictor, concurrent


class Predictor(BasePredictor):
    def setup(self):
        self.count = 0
        self.hog = []
        print(f"setup in pid {os.getpid()}")

    @concurrent(max=4)
    async def predict(self, sleep: float = 0.0, grow_mb: int = 0) -> str:
        self.count += 1
        if grow_mb:
            self.hog.append(b"x" * (grow_mb * 1024 * 1024))  # written, so resident
        if sleep:
            await asyncio.sleep(sleep)
        return f"{os.getpid()}:{self.count}"
