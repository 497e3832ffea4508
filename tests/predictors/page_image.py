"""An image model for the browser page's tests: draws a PNG (written with zlib, no imaging library).

``Single`` returns one image; ``Gallery`` a list of images and a text file, to show
lists of mixed file outputs; ``Picture`` takes an input image and reports its size.
"""

import struct
import tempfile
import zlib
from typing import List

from cog import BasePredictor, BaseRunner, Input, Path


def _png(width: int, height: int, rgb: tuple) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            # A diagonal gradient so the screenshot shows a picture, not a flat block.
            t = (x + y) / max(1, width + height - 2)
            row += bytes(int(c * (0.35 + 0.65 * t)) for c in rgb)
        rows.append(bytes(row))
    raw = b"".join(rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _save(data: bytes, suffix: str) -> Path:
    f = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    with f:
        f.write(data)
    return Path(f.name)


class Predictor(BasePredictor):
    def predict(self, width: int = Input(default=96, ge=1, le=512, description="Width in pixels"),
                height: int = Input(default=64, ge=1, le=512, description="Height in pixels"),
                colour: str = Input(default="teal", choices=["teal", "orange", "purple"])) -> Path:
        rgb = {"teal": (0, 168, 150), "orange": (255, 140, 0), "purple": (128, 64, 200)}[colour]
        print(f"drawing {width}x{height} {colour}", flush=True)
        return _save(_png(width, height, rgb), ".png")


class Gallery(BaseRunner):
    def run(self, count: int = Input(default=2, ge=1, le=5)) -> List[Path]:
        out = [_save(_png(32, 32, (40 * i, 120, 200)), ".png") for i in range(count)]
        out.append(_save(b"plain text beside the images\n", ".txt"))
        return out


class Picture(BaseRunner):
    def run(self, image: Path = Input(description="Any PNG")) -> str:
        data = open(image, "rb").read()
        width, height = struct.unpack(">II", data[16:24])
        return f"{width}x{height}"


class InFolder(BaseRunner):
    """The image as an open file object: the worker writes it into the prediction's own folder."""

    def run(self) -> Path:
        import io
        buf = io.BytesIO(_png(4, 2, (0, 168, 150)))
        buf.name = "drawn.png"
        return buf
