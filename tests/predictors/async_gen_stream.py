"""Worker tests: an async generator streams each item as it is produced."""
import asyncio

from cog import BasePredictor


class Predictor(BasePredictor):
    async def predict(self, n: int = 3, gap: float = 0.0):
        for i in range(n):
            yield i
            if gap:
                await asyncio.sleep(gap)
