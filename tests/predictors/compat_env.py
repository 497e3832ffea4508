"""Reads environment variables that a cog.yaml ``environment:`` list provides, at import and per call."""

import os

from cog import BasePredictor

AT_IMPORT = os.environ.get("COMPAT_GREETING")


class Predictor(BasePredictor):
    def predict(self, name: str) -> str:
        return f"{AT_IMPORT}|{os.getenv(name)}"
