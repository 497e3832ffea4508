"""CLI tests: an async predictor (concurrency > 1 needs one) that sleeps until canceled."""

import asyncio

from cog import BaseRunner, Input


class Runner(BaseRunner):
    async def run(self, seconds: float = Input(default=0.0, ge=0.0)) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"
