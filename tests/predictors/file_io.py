"""Worker tests: file inputs (URL/data:) and big file / JSON outputs."""
import io
import os
import tempfile

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self, mode: str = "path", size_mb: int = 1, image: Path = None, blob: str = "") -> object:
        if mode == "input":
            # Report where the downloaded input lives and what it holds.
            return {"path": str(image), "exists": os.path.exists(image), "data": open(image, "rb").read().decode()}
        if mode == "bad_output":
            return {"fine": 1, "bad": object()}
        if mode == "echo_len":
            return len(blob)
        if mode == "big_json":
            return "y" * (size_mb * 1024 * 1024)
        if mode == "iobase":
            return io.BytesIO(b"z" * (size_mb * 1024 * 1024))
        fd, name = tempfile.mkstemp(suffix=".bin")
        with os.fdopen(fd, "wb") as f:
            chunk = b"q" * (1024 * 1024)
            for _ in range(size_mb):
                f.write(chunk)
        return Path(name)
