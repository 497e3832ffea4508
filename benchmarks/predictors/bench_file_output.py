"""Benchmark predictor: a large file output (100 MB by default).

The file is written once per size into ``BENCH_OUTPUT_DIR`` (the benchmark's
temporary working folder, removed afterwards) and the same path is returned by
every prediction, so repeated runs do not fill the disk: coglet never deletes
returned files.  The server turns it into a ``data:`` URI, so the response is
about 133 MB of base64.
"""

import os
import tempfile

from cog import BaseRunner, Input, Path

_CHUNK = bytes(range(256)) * 4096  # 1 MiB of a fixed pattern


class Runner(BaseRunner):
    def setup(self) -> None:
        self.directory = os.environ.get("BENCH_OUTPUT_DIR") or tempfile.gettempdir()

    def run(self, size_mb: int = Input(default=100, ge=1, le=1024)) -> Path:
        target = os.path.join(self.directory, f"bench-output-{size_mb}mb.bin")
        if not os.path.exists(target) or os.path.getsize(target) != size_mb * len(_CHUNK):
            with open(target + ".tmp", "wb") as fh:
                for _ in range(size_mb):
                    fh.write(_CHUNK)
            os.replace(target + ".tmp", target)
        return Path(target)
