"""A model with Secret inputs (and a file input) that holds until a gate file exists (so a PUT can find it in flight)."""
import os
import time
from typing import Optional

from cog import BasePredictor, Input, Path, Secret, streaming


class Predictor(BasePredictor):
    @streaming  # so a PUT can attach an SSE stream too
    def predict(self, api_key: Secret, gate: str, other: Optional[Secret] = Input(default=None),
                note: str = "", attachment: Optional[Path] = Input(default=None)) -> str:
        print("holding", note)
        deadline = time.monotonic() + 30
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
        # Reversed: proves the model got the clear value without echoing it.
        return api_key.get_secret_value()[::-1] + ("+other" if other is not None else "")
