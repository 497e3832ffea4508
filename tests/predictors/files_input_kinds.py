"""File inputs of every shape (Path, File, list[Path], Optional[Path]); reports what arrived."""
import os
from typing import Optional

from cog import BasePredictor, File, Input, Path


class Predictor(BasePredictor):
    def predict(self, image: Path = Input(default=None), blob: File = Input(default=None),
                pages: list[Path] = Input(default=[]), mask: Optional[Path] = None) -> dict:
        return {
            "image": os.path.basename(str(image)) if image is not None else None,
            "blob": blob.read().decode() if blob is not None else None,
            "pages": [open(p).read() for p in pages],
            "mask": mask is not None,
        }
