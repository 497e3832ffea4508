"""Benchmark predictor: a large ``data:`` URI input (70 MB of base64 by default).

The server decodes the URI into a file before run() is called; run() returns
the decoded file's size so the client can check that every byte arrived.
"""

import os

from cog import BaseRunner, Path


class Runner(BaseRunner):
    def run(self, file: Path) -> int:
        return os.path.getsize(file)
