"""Large ``data:`` URI inputs, decoded to files straight from the request body.

A 70 MB ``data:`` URI input used to exist many times over: the request body,
its decoded text, the parsed string, the JSON text and bytes of the worker's
request (or its spill file), the worker's parsed copy and the worker's decoded
bytes, about ten times the input at the peak (683 MiB measured for 70 MB).

Here the parent finds such strings in the raw body *before* the JSON parser
sees it (:func:`spool_data_uris`), decodes each one chunk by chunk into a file,
and parses a body in which the string is replaced by a short placeholder.  The
input's value becomes a :class:`~minicog.server.outputs.DataURIInput`, a ``str``
(``"data:<mime>;base64,"``, so validation still sees a ``data:`` URL) that also
holds the decoded file.  The service tells the worker where the file is (the
``input_files`` of the ``predict`` message, out of band, so a client cannot
name a local file); the worker hands the path to the model without fetching
anything.  A prediction's echo of its input renders the file back as the
``data:`` URI it came from, streamed (:func:`~minicog.server.outputs.render_json`).

Only *canonical* standard base64 is spooled: ``data:<non-empty mime>;base64,``
then the base64 alphabet only, padded to a multiple of 4, ``=`` only at the end,
zero trailing bits, no JSON escape in the string.  Re-encoding the file then
gives back exactly the client's text, so an input that is not a file input
after all (a ``str`` parameter) gets its string back unchanged
(:func:`DataURIInput.text`).  Anything else is left to the JSON parser, as before.

The files live in ``Settings.tmp_dir`` (MINICOG_TMPDIR; else the system's temporary
folder) as ``minicog-input-*``, and belong
to the request until a prediction record takes them; whoever owns them calls
:func:`release` (a failed parse, a refused request, the record's release).  A
record keeps them as long as it keeps its output files (while it is retained
after the end, ``Settings.retention_seconds``), since its echo renders them.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import tempfile
from typing import Any, Iterable, Optional

from minicog import files
from minicog.server.outputs import DataURIInput, FileOutput

__all__ = ["spool_data_uris", "attach", "release", "input_files", "DataURIInput"]

#: Base64 characters decoded per step (a multiple of 4): the memory one decode costs.
_STEP = 4 * 128 * 1024
_HEADER_MAX = 256  # a longer media type is not worth the special case
_PREFIX = b'"data:'
_B64_SUFFIX = b";base64"


def _canonical_mime(raw: bytes) -> Optional[str]:
    if not raw or b"\\" in raw or b'"' in raw:
        return None
    try:
        mime = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    return mime if mime.isprintable() else None


def _decode_to_file(body: bytes, start: int, end: int, mime: str, directory: Optional[str]) -> Optional[DataURIInput]:
    """Decode ``body[start:end]`` (base64 text) into a new file; None if not canonical."""
    if (end - start) % 4:
        return None
    fd, path = tempfile.mkstemp(prefix="minicog-input-", suffix=files.filename_from_url(f"data:{mime},"),
                                dir=directory)
    size = 0
    view = memoryview(body)
    try:
        with os.fdopen(fd, "wb") as out:
            pos = start
            while pos < end:
                stop = min(pos + _STEP, end)
                chunk = bytes(view[pos:stop])
                if stop < end and b"=" in chunk:
                    raise ValueError("padding before the end")
                data = base64.b64decode(chunk, validate=True)
                if stop == end and chunk and base64.b64encode(data[-3:] if len(data) % 3 == 0 else data[-(len(data) % 3):])[-4:] != chunk[-4:]:
                    raise ValueError("non-zero trailing bits")
                out.write(data)
                size += len(data)
                pos = stop
    except (ValueError, binascii.Error):
        _unlink(path)
        return None
    except BaseException:
        _unlink(path)
        raise
    return DataURIInput(FileOutput(path, mime, size))


def spool_data_uris(body: bytes, *, min_chars: int, directory: Optional[str] = None) -> tuple[bytes, dict[str, DataURIInput]]:
    """Decode every canonical ``data:`` URI string of at least *min_chars* characters in
    the JSON *body* to a file; return the body with each replaced by a placeholder
    string, and the placeholders' inputs.  Nothing found → ``(body, {})``.

    The body is only searched, never parsed: a quote that is not escaped (preceded by
    an even run of backslashes) always starts or ends a JSON string, and a string that
    ends cannot be followed by ``data:`` in valid JSON, so ``"data:`` there starts one;
    it ends at the next quote, since the strings taken contain no backslash.  Where a
    placeholder lands in the parsed document is checked by :func:`attach`.
    """
    found: dict[str, DataURIInput] = {}
    if min_chars <= 0 or len(body) < min_chars:
        return body, found
    token = secrets.token_hex(12)
    pieces: list[bytes] = []
    copied = 0
    pos = 0
    try:
        while True:
            i = body.find(_PREFIX, pos)
            if i < 0:
                break
            j = body.find(b'"', i + 1)
            if j < 0:
                break
            pos = j + 1
            if j - i - 1 < min_chars:
                continue
            k = i
            while k > 0 and body[k - 1] == 0x5C:  # backslashes before the quote
                k -= 1
            if (i - k) % 2:
                continue  # an escaped quote inside another string
            comma = body.find(b",", i + 1, min(j, i + _HEADER_MAX))
            if comma < 0 or not body.endswith(_B64_SUFFIX, i + 6, comma) or body.find(b"\\", comma, j) >= 0:
                continue
            mime = _canonical_mime(body[i + 6:comma - len(_B64_SUFFIX)])
            if mime is None:
                continue
            spooled = _decode_to_file(body, comma + 1, j, mime, directory)
            if spooled is None:
                continue
            placeholder = f"minicog-spooled-input-{token}-{len(found)}"
            found[placeholder] = spooled
            pieces.append(body[copied:i + 1])
            pieces.append(placeholder.encode("ascii"))
            copied = j
    except BaseException:
        release(found.values())
        raise
    if not found:
        return body, found
    pieces.append(body[copied:])
    return b"".join(pieces), found


def attach(input_value: Any, found: dict[str, DataURIInput]) -> bool:
    """Put the spooled inputs in place of their placeholders in a parsed ``input``:
    as the value of an input, or an item of a list input.  False if some placeholder
    is anywhere else (a key, a nested object, another field): the caller then
    releases them all and parses the original body."""
    if not found:
        return True
    if not isinstance(input_value, dict):
        return False
    left = dict(found)
    for name, value in input_value.items():
        if isinstance(value, str) and value in left:
            input_value[name] = left.pop(value)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str) and item in left:
                    value[i] = left.pop(item)
    return not left


def input_files(value: Any) -> list[list[Any]]:
    """``[[name, index or None, path], ...]`` for the spooled inputs in *value* (the
    ``input_files`` the worker uses instead of fetching those inputs)."""
    out: list[list[Any]] = []
    if isinstance(value, dict):
        for name, v in value.items():
            if isinstance(v, DataURIInput):
                out.append([name, None, v.file.path])
            elif isinstance(v, list):
                out.extend([name, i, item.file.path] for i, item in enumerate(v) if isinstance(item, DataURIInput))
    return out


def spooled_in(value: Any) -> list[DataURIInput]:
    """Every DataURIInput in an input dict (values and list items)."""
    out: list[DataURIInput] = []
    if isinstance(value, dict):
        for v in value.values():
            if isinstance(v, DataURIInput):
                out.append(v)
            elif isinstance(v, list):
                out.extend(item for item in v if isinstance(item, DataURIInput))
    return out


def release(spooled: Iterable[DataURIInput]) -> None:
    """Delete the files of *spooled* (missing ones are fine)."""
    for item in spooled:
        _unlink(item.file.path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
