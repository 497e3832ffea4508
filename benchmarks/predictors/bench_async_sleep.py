"""Benchmark predictor: an async run() that yields to the loop once, 8 slots.

``@concurrent(max=8)`` declares eight slots.  coglet only reads its slot count
from ``COG_MAX_CONCURRENCY`` (Cog's build step bakes the decorator into that
variable), so the benchmark sets it to 8 for coglet; minicog reads the
decorator itself.
"""

import asyncio

from cog import BaseRunner, concurrent


class Runner(BaseRunner):
    @concurrent(max=8)
    async def run(self) -> str:
        await asyncio.sleep(0)
        return "ok"
