"""HTTP tests: returns file outputs (a list of Paths, or one big file of `size` bytes)."""
import os
import tempfile

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self, count: int = 3, size: int = 0) -> list[Path]:
        d = tempfile.mkdtemp(prefix="http_files-")
        out = []
        if size:
            p = os.path.join(d, "big.bin")
            with open(p, "wb") as f:
                block = bytes(range(256)) * 4096
                left = size
                while left > 0:
                    f.write(block[:left])
                    left -= len(block)
            return [Path(p)]
        for i in range(count):
            p = os.path.join(d, f"o{i}.txt")
            with open(p, "w") as f:
                f.write(f"file {i}")
            out.append(Path(p))
        return out
