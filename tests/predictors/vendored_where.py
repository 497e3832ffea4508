"""Vendoring tests: says where the worker found the minicog package it runs on.

Run from a minicog.pyz (or a copied minicog/ folder) in an empty directory, the
answer proves the worker used the vendored copy, not an installed one.
"""

import sys

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(self, text: str = Input(default="hi")) -> dict:
        return {"text": text, "minicog": sys.modules["minicog"].__file__}
