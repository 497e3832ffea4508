"""Worker tests: an async predictor served with several slots that misbehaves on request."""
import asyncio
import gc
import os
import socket

from cog import BasePredictor, concurrent


def _break_my_slot() -> None:
    # Find the worker and shut down the socket of the one busy slot (this prediction's),
    # as a broken channel would be: both ends see EOF, the fds stay valid.
    worker = next(o for o in gc.get_objects() if type(o).__name__ == "Worker" and hasattr(o, "busy"))
    (index,) = worker.busy
    fd = os.dup(worker.slots[index].conn.fileno())
    s = socket.socket(fileno=fd)
    s.shutdown(socket.SHUT_RDWR)
    s.close()


class Predictor(BasePredictor):
    @concurrent(max=3)
    async def predict(self, mode: str = "sleep", seconds: float = 0.0, tag: str = "") -> str:
        print(f"start {tag}")
        if mode == "exit":
            os._exit(9)
        if mode == "fd":
            os.write(1, f"fd output of {tag}\n".encode())
        if mode == "break":
            _break_my_slot()
        if mode == "stubborn":
            deadline = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < deadline:
                try:
                    await asyncio.sleep(deadline - asyncio.get_running_loop().time())
                except asyncio.CancelledError:
                    print(f"{tag} ignores the cancel")
            return f"stubborn {tag}"
        await asyncio.sleep(seconds)
        return f"done {tag}"
