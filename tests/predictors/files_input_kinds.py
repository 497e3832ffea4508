"""File inputs of every shape (Path, File, list[Path], Optional[Path]) and a str that may
hold a data: URI; reports what arrived (paths and SHA-256 digests of the contents)."""
import hashlib
from typing import Optional

from cog import BasePredictor, File, Input, Path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Predictor(BasePredictor):
    def predict(self, image: Path = Input(default=None), blob: File = Input(default=None),
                pages: list[Path] = Input(default=[]), mask: Optional[Path] = None, text: str = "") -> dict:
        return {
            "image": str(image) if image is not None else None,
            "image_sha": _sha(open(image, "rb").read()) if image is not None else None,
            "blob_sha": _sha(blob.read()) if blob is not None else None,
            "pages": [str(p) for p in pages],
            "pages_sha": [_sha(open(p, "rb").read()) for p in pages],
            "mask": mask is not None,
            "text_sha": _sha(text.encode()),
        }
