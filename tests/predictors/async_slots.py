"""Worker tests: an async predictor served with several slots (prints, cancel, streaming)."""
import asyncio
import sys

from cog import BasePredictor, current_scope


class Predictor(BasePredictor):
    async def setup(self):
        self.loop = asyncio.get_running_loop()
        self.running = 0
        self.peak = 0
        print("async setup done")

    async def predict(self, name: str = "x", seconds: float = 0.5, flood: int = 0, stream: int = 0,
                      spawn: bool = False):
        assert asyncio.get_running_loop() is self.loop  # setup and predictions share one loop
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            print(f"start {name}")
            if spawn:
                async def child():
                    print(f"child of {name}")
                await asyncio.create_task(child())
            for i in range(flood):
                print(f"{name} flood line {i} " + "x" * 100)
                if i % 100 == 0:
                    await asyncio.sleep(0)
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                print(f"{name} saw CancelledError", file=sys.stderr)
                raise
            current_scope().record_metric("peak", self.peak)
            print(f"end {name}")
            return f"{name} done"
        finally:
            self.running -= 1
