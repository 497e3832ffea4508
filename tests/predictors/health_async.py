"""Worker tests: an async healthcheck on the worker's event loop."""
import asyncio

from cog import BasePredictor


class Predictor(BasePredictor):
    async def setup(self):
        self.loop = asyncio.get_running_loop()

    async def healthcheck(self):
        return asyncio.get_running_loop() is self.loop

    async def predict(self) -> str:
        return "ok"
