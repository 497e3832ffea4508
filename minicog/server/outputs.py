"""File outputs of a prediction: lazy ``data:`` URIs, streamed JSON bodies, ordered uploads.

A model that returns a 100 MB file must not make the server hold several copies
of it.  Building the ``data:`` URI as a string would cost 133 MB for the base64
text, the same again inside the JSON document, and once more as the encoded
bytes of the HTTP body, per consumer (response, webhook, SSE).  So a file output
stays a :class:`FileOutput` - a path, a mime type and the size seen when the
worker reported it - everywhere inside the server, and only becomes text at the
moment bytes go to a socket:

* :func:`render_json` turns a JSON-like value that may contain ``FileOutput``
  objects into a :class:`Body`: a list of byte strings and ``FileOutput`` parts
  whose total length is known up front (base64 length is ``4 * ceil(n / 3)``),
  so responses and webhooks carry an exact ``Content-Length`` and are written
  chunk by chunk straight from the file (:meth:`Body.chunks`).  Peak memory per
  consumer is one chunk (:data:`minicog.files` reads 384 KiB at a time).
* :meth:`Body.materialize` / :func:`to_plain` build the strings when a caller
  really wants Python values (the embedding API, small outputs in tests).

The trade-off is that the file must still exist when the body is written: the
:class:`~minicog.server.prediction.Prediction` counts its consumers and only
lets the engine delete the per-prediction files once the response, the
SSE readers and the terminal webhook are done.  If the file changes size under
us anyway, :meth:`Body.chunks` raises :class:`~minicog.errors.OutputError`
rather than sending a body that contradicts its ``Content-Length``.

With ``--upload-url``, :class:`Uploader` PUTs file outputs on a small thread pool
(never on the engine's I/O thread).  Uploads of one prediction run
concurrently, but the prediction places each result at its own index, so a list
output keeps the order the model produced (coglet returns completion order).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import secrets
import threading
from typing import Any, Callable, Iterator, Optional, Union

from minicog import files
from minicog.encoding import COMPACT_JSON
from minicog.errors import OutputError

__all__ = ["FileOutput", "DataURIInput", "Body", "render_json", "to_plain", "Uploader", "dumps"]


#: COMPACT_JSON's C encoder, made once and without the cycle check.  Why: every body
#: minicog sends is built from decoded JSON and its own dicts, which hold no cycles,
#: and ``JSONEncoder.encode`` makes a new C encoder (and a dict to track cycles) on
#: every call, several times per prediction.  None where the C accelerator is missing.
_C_ENCODE = None if json.encoder.c_make_encoder is None else json.encoder.c_make_encoder(
    None, COMPACT_JSON.default, json.encoder.encode_basestring, None,
    COMPACT_JSON.key_separator, COMPACT_JSON.item_separator, False, False, COMPACT_JSON.allow_nan)


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept (the wire format of every body minicog sends)."""
    if _C_ENCODE is None:
        return COMPACT_JSON.encode(value)
    return "".join(_C_ENCODE(value, 0))


class FileOutput:
    """A file produced by a prediction, rendered as a ``data:`` URI only when written."""

    __slots__ = ("path", "mime", "size")

    def __init__(self, path: "os.PathLike[str] | str", mime: Optional[str] = None, size: Optional[int] = None):
        self.path = os.fspath(path)
        self.mime = mime or files.guess_mime(self.path)
        # The size is fixed now so every body that embeds this file has the same
        # length; a file that changes afterwards makes the write fail loudly.
        self.size = os.path.getsize(self.path) if size is None else size

    @property
    def prefix(self) -> str:
        return f"data:{self.mime};base64,"

    def encoded_length(self) -> int:
        """Length in bytes of the ``data:`` URI, without reading the file."""
        return len(self.prefix.encode("ascii")) + 4 * ((self.size + 2) // 3)

    def iter_encoded(self) -> Iterator[bytes]:
        """The ``data:`` URI in ASCII pieces; raises OutputError if the file changed size."""
        expected = self.encoded_length()
        sent = 0
        try:
            for piece in files.iter_data_uri_from_path(self.path, self.mime):
                data = piece.encode("ascii")
                sent += len(data)
                if sent > expected:
                    break
                yield data
        except OSError as exc:
            raise OutputError(f"Output file {self.path} could not be read: {exc.strerror or exc}") from None
        if sent != expected:
            raise OutputError(f"Output file {self.path} changed size while it was being sent")

    def data_uri(self) -> str:
        return b"".join(self.iter_encoded()).decode("ascii")

    def __repr__(self) -> str:
        return f"FileOutput({self.path!r}, {self.mime!r}, size={self.size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileOutput) and (self.path, self.mime, self.size) == (other.path, other.mime, other.size)

    __hash__ = None  # type: ignore[assignment]


class DataURIInput(str):
    """A large ``data:`` URI input that the parent decoded into a file (see :mod:`.spool`).

    As a ``str`` it is only the URI's head, ``"data:<mime>;base64,"`` (enough for
    validation to see a ``data:`` URL); :attr:`file` is the decoded content, and
    :func:`render_json` writes the whole URI back from it, streamed.
    """

    file: FileOutput

    def __new__(cls, file: FileOutput) -> "DataURIInput":
        obj = super().__new__(cls, file.prefix)
        obj.file = file
        return obj

    def text(self) -> str:
        """The complete ``data:`` URI as a string (what the client sent)."""
        return self.file.data_uri()


Part = Union[bytes, FileOutput]


class Body:
    """A JSON document as byte parts and file parts, with its exact length."""

    __slots__ = ("parts", "length", "has_files")

    def __init__(self, parts: list[Part]):
        self.parts = parts
        #: True if a part is a file, read when the body is sent.
        self.has_files = False
        if len(parts) == 1 and type(parts[0]) is bytes:  # the usual answer: one JSON text
            self.length = len(parts[0])
            return
        self.length = sum(len(p) if isinstance(p, bytes) else p.encoded_length() for p in parts)
        self.has_files = any(isinstance(p, FileOutput) for p in parts)

    def chunks(self) -> Iterator[bytes]:
        """Yield the body's bytes; a fresh generator on every call (retries re-send)."""
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                yield from part.iter_encoded()

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks()

    def materialize(self) -> bytes:
        return b"".join(self.chunks())


#: Types that never hold a file, checked by identity first: most of an answer's values
#: are these, and two isinstance checks per value cost more than the whole lookup.
_LEAVES = frozenset({str, int, float, bool, type(None)})


def _has_files(value: Any) -> bool:
    if type(value) in _LEAVES:
        return False
    if isinstance(value, (FileOutput, DataURIInput)):
        return True
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, (list, tuple)):
        return False
    # A loop, not any(generator): a response's snapshot is walked on every answer.
    for v in value:
        if type(v) not in _LEAVES and _has_files(v):
            return True
    return False


def render_json(value: Any) -> Body:
    """Encode *value* as compact JSON, leaving FileOutput objects as lazily read parts.

    Each file is replaced by a string holding a random token before encoding, and
    the encoded text is split at those strings.  The token is fresh per call, so a
    user string can never be mistaken for a placeholder.
    """
    if not _has_files(value):
        return Body([dumps(value).encode("utf-8")])
    found: list[FileOutput] = []
    token = secrets.token_hex(16)

    def mark(v: Any) -> Any:
        if isinstance(v, DataURIInput):
            v = v.file
        if isinstance(v, FileOutput):
            found.append(v)
            return f"\x00{token}:{len(found) - 1}\x00"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [mark(x) for x in v]
        return v

    text = dumps(mark(value))
    pattern = re.compile('"\\\\u0000' + token + ':(\\d+)\\\\u0000"')
    parts: list[Part] = []
    pos = 0
    for m in pattern.finditer(text):
        parts.append((text[pos:m.start()] + '"').encode("utf-8"))
        parts.append(found[int(m.group(1))])
        parts.append(b'"')
        pos = m.end()
    parts.append(text[pos:].encode("utf-8"))
    return Body([p for p in parts if not (isinstance(p, bytes) and not p)])


def to_plain(value: Any) -> Any:
    """*value* with every FileOutput turned into its ``data:`` URI string."""
    if isinstance(value, DataURIInput):
        return value.text()
    if isinstance(value, FileOutput):
        return value.data_uri()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class Uploader:
    """PUTs file outputs to ``--upload-url`` on a bounded thread pool.

    ``submit(path, mime, prediction_id, done)`` returns at once; ``done(url, error)``
    is called on a pool thread with the resulting URL or an OutputError message.
    """

    def __init__(self, upload_url: str, *, timeout: float, max_workers: int = 4):
        self.upload_url = upload_url
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="minicog-upload")
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, path: str, mime: Optional[str], prediction_id: str, done: Callable[[Optional[str], Optional[str]], None]) -> None:
        def run() -> None:
            try:
                url = files.upload(path, self.upload_url, prediction_id=prediction_id, mime=mime, timeout=self.timeout)
            except OutputError as exc:
                done(None, str(exc))
            except Exception as exc:  # never lose the callback: the prediction waits for it
                done(None, f"Failed to upload output: {type(exc).__name__}: {exc}")
            else:
                done(url, None)

        with self._lock:
            if self._closed:
                done(None, "Failed to upload output: the server is shutting down")
                return
            self._pool.submit(run)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False)
