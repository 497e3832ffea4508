"""Turn what a predictor returns into JSON values and file outputs (worker side).

The worker hands every output item to this module.  The rules are Cog's
(coglet-python ``output.rs``), in three steps:

1. **Dispatch** (:func:`iter_output_items`): a generator, or a ``list``/``tuple``
   at the top level, is a *stream* of items; anything else is one value.
   (Async generators are iterated by the worker on its event loop.)
2. **Per item** (:class:`OutputEncoder`): an ``os.PathLike`` is a file output
   read from where it is; an ``io.IOBase`` is written to ``<n>.<ext>`` in the
   prediction's output folder (:func:`write_iobase`); any other value goes
   through :func:`make_encodeable`, then :func:`encode_files` (files *nested*
   in dicts/lists/models are always inlined as ``data:`` URIs, as in Cog),
   then :func:`dumps`.
3. **JSON** (:func:`dumps`): compact, UTF-8 text.  Unsupported types raise
   :class:`~minicog.errors.OutputError` with Cog's message
   (``Failed to serialize output: TypeError: Object of type X is not JSON
   serializable``).  NaN and ±Infinity are rejected here, naming the value and
   where it is, instead of producing text that is not JSON (coglet lets
   Python emit ``NaN`` and then fails with a parser error).

:func:`make_encodeable` follows Cog's conversions (``model_dump()``, pydantic
v1 ``.dict()``, dataclasses including ``cog.BaseModel``, containers, ``Enum``
→ value, ``datetime`` → ISO 8601, ``PathLike`` → ``pathlib.Path``) with these
documented differences:

* ``datetime.date`` and ``datetime.time`` become ISO 8601 strings too (Cog
  leaves them and then fails to serialize).
* numpy values are recognised by duck typing, without importing numpy:
  anything with a callable ``tolist()`` (arrays and numpy scalars) is
  converted by it, else anything with ``item()`` and a ``dtype``.
* Dataclass fields are converted one by one rather than with
  ``dataclasses.asdict``, which deep-copies values and fails on open files.

A text stream (``io.StringIO``, a file opened in text mode) returned as a
top-level output fails, as in Cog, with ``Failed to read IOBase: ...``; return
a binary stream.  Nested text streams are inlined as UTF-8 (also Cog's rule).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import io
import json
import math
import os
import pathlib
import types
from typing import Any, Iterable, NamedTuple, Optional

from . import files
from .errors import OutputError

__all__ = [
    "make_encodeable", "encode_files", "encode_value", "dumps", "is_file_like", "write_iobase",
    "iter_output_items", "OutputEncoder", "EncodedItem",
]

# Copy granularity when writing an IOBase output to disk (not a limit).
_COPY_CHUNK = 1024 * 1024

_SCALARS = (str, int, float, bool, type(None))


def make_encodeable(obj: Any) -> Any:
    """Convert *obj* recursively into JSON-native values, leaving files for :func:`encode_files`."""
    if isinstance(obj, _SCALARS):
        return obj
    dump = getattr(obj, "model_dump", None)  # pydantic v2
    if callable(dump) and not isinstance(obj, type):
        return make_encodeable(dump())
    if not isinstance(obj, dict):
        legacy = getattr(obj, "dict", None)  # pydantic v1
        if callable(legacy) and not isinstance(obj, type) and not isinstance(obj, (os.PathLike, io.IOBase)):
            return make_encodeable(legacy())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: make_encodeable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: make_encodeable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset, types.GeneratorType)):
        return [make_encodeable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return make_encodeable(obj.value)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, os.PathLike):
        return obj if isinstance(obj, pathlib.PurePath) else pathlib.Path(os.fspath(obj))
    if isinstance(obj, io.IOBase):
        return obj
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist) and not isinstance(obj, type):
        return make_encodeable(tolist())
    item = getattr(obj, "item", None)  # other array-likes with a scalar view
    if callable(item) and hasattr(obj, "dtype") and not isinstance(obj, type):
        return make_encodeable(item())
    return obj


def _read_stream(obj: io.IOBase) -> Any:
    if obj.seekable():
        obj.seek(0)
    return obj.read()


def encode_files(obj: Any) -> Any:
    """Replace files nested in dicts/lists by ``data:`` URIs (PathLike and IOBase alike)."""
    if isinstance(obj, _SCALARS):
        return obj
    if isinstance(obj, dict):
        return {k: encode_files(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [encode_files(v) for v in obj]
    if isinstance(obj, os.PathLike):
        path = os.fspath(obj)
        try:
            return files.data_uri_from_path(path)
        except OSError as exc:
            raise OutputError(f"Failed to read output file {path}: {exc.strerror or exc}") from None
    if isinstance(obj, io.IOBase):
        try:
            data = _read_stream(obj)
        except (OSError, ValueError) as exc:
            raise OutputError(f"Failed to read IOBase: {type(exc).__name__}: {exc}") from None
        if isinstance(data, str):
            data = data.encode("utf-8")
        name = getattr(obj, "name", None)
        mime = files.guess_mime(name) if isinstance(name, str) else files.DEFAULT_MIME
        return files.data_uri(bytes(data or b""), mime)
    return obj


def _find_non_finite(obj: Any, where: str = "output") -> Optional[tuple[str, float]]:
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where, obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _find_non_finite(v, f"{where}[{json.dumps(k) if isinstance(k, str) else k}]")
            if hit:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            hit = _find_non_finite(v, f"{where}[{i}]")
            if hit:
                return hit
    return None


#: The compact encoder of every JSON text minicog sends, made once (json.dumps with
#: options builds one per call); stateless, so threads share it.
COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(obj: Any) -> str:
    """Compact JSON text for a JSON-native value; :class:`OutputError` if it is not one.

    Messages name the problem: the unsupported type (Cog's text), or the NaN/Infinity
    value and its place (``output["a"][2]``), or a circular reference.
    """
    try:
        text = COMPACT_JSON.encode(obj)
    except TypeError as exc:
        raise OutputError(f"Failed to serialize output: TypeError: {exc}") from None
    except ValueError as exc:
        if "ircular" in str(exc):  # json's "Circular reference detected"
            raise OutputError(f"Failed to serialize output: ValueError: {exc}") from None
        try:
            hit = _find_non_finite(obj)
        except RecursionError:
            hit = None
        if hit:
            where, value = hit
            raise OutputError(
                f"Failed to serialize output: {value!r} at {where} is not valid JSON "
                "(NaN and Infinity cannot be sent; return None or a string instead)") from None
        raise OutputError(f"Failed to serialize output: ValueError: {exc}") from None
    except RecursionError:
        raise OutputError("Failed to serialize output: the value is nested too deeply (or contains itself)") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: not representable in UTF-8
        raise OutputError(f"Failed to serialize output: a string contains an unpaired surrogate ({exc.reason})") from None
    return text


def encode_value(obj: Any) -> Any:
    """A non-file output item → its JSON-native value (make_encodeable, encode_files, checked by dumps)."""
    try:
        value = encode_files(make_encodeable(obj))
    except RecursionError:
        raise OutputError("Failed to serialize output: the value is nested too deeply (or contains itself)") from None
    dumps(value)
    return value


def is_file_like(obj: Any) -> bool:
    """True for values that become file outputs: ``os.PathLike`` and ``io.IOBase``."""
    return isinstance(obj, (os.PathLike, io.IOBase))


def _extension(obj: Any) -> str:
    name = getattr(obj, "name", None)
    if isinstance(name, (str, os.PathLike)):
        ext = os.path.splitext(os.fspath(name))[1]
        if ext and len(ext) > 1:
            return ext
    return ".bin"


def write_iobase(obj: io.IOBase, directory: str, index: int) -> str:
    """Write an ``io.IOBase`` output to ``<directory>/<index>.<ext>``; return the path.

    ``ext`` is the extension of ``obj.name`` if it has one, else ``bin`` (Cog's naming).
    The stream is rewound when seekable and copied in chunks.  A text stream raises
    :class:`OutputError` ``Failed to read IOBase: ...`` (Cog's behaviour).
    """
    path = os.path.join(directory, f"{index}{_extension(obj)}")
    try:
        if obj.seekable():
            obj.seek(0)
        first = obj.read(_COPY_CHUNK)
    except (OSError, ValueError) as exc:
        raise OutputError(f"Failed to read IOBase: {type(exc).__name__}: {exc}") from None
    if isinstance(first, str):
        raise OutputError(
            f"Failed to read IOBase: {type(obj).__name__} is a text stream (read() returned str, not bytes); "
            "return a binary stream such as io.BytesIO or a file opened with 'rb'")
    try:
        with open(path, "wb") as out:
            block = first
            while block:
                out.write(block)
                block = obj.read(_COPY_CHUNK)
    except (OSError, ValueError, TypeError) as exc:
        raise OutputError(f"Failed to read IOBase: {type(exc).__name__}: {exc}") from None
    return path


def iter_output_items(value: Any) -> tuple[bool, Iterable[Any]]:
    """Cog's top-level dispatch: ``(is_stream, items)``.

    Generators (sync) and top-level ``list``/``tuple`` are streams of items; anything
    else is a single item (``(False, [value])``).  Iterating a generator runs the model
    code, so the worker does it where cancellation and log routing apply.
    """
    if isinstance(value, types.GeneratorType):
        return True, value
    if isinstance(value, (list, tuple)):
        return True, value
    return False, (value,)


class EncodedItem(NamedTuple):
    """One encoded output item: a JSON value, or a file (``path`` + guessed ``mime``)."""

    kind: str  # "value" or "file"
    value: Any = None
    path: Optional[str] = None
    mime: Optional[str] = None


class OutputEncoder:
    """Encodes the items of one prediction, numbering ``IOBase`` files from 0 in *directory*."""

    def __init__(self, directory: str):
        self.directory = directory
        self._next = 0

    def encode(self, item: Any) -> EncodedItem:
        if isinstance(item, os.PathLike):
            path = os.fspath(item)
            return EncodedItem("file", path=path, mime=files.guess_mime(path))
        if isinstance(item, io.IOBase):
            index, self._next = self._next, self._next + 1
            path = write_iobase(item, self.directory, index)
            return EncodedItem("file", path=path, mime=files.guess_mime(path))
        return EncodedItem("value", value=encode_value(item))
