"""Files on the wire: mime types, ``data:`` URIs, URL inputs and output uploads.

Cog moves files in three ways, and this module implements each with the
standard library (``urllib``, ``base64``, ``mimetypes``) so both the parent and
the worker can use it:

* **URL inputs** (``Path``/``File`` parameters): ``http(s)://`` and ``data:``
  strings are fetched by :func:`fetch` into a temporary file whose name ends
  with the URL's filename (Cog's ``get_filename`` rules, see
  :func:`filename_from_url`), so a model that looks at the suffix (``.png``)
  still works.  Bytes are streamed to disk in chunks and counted: a download
  that grows past ``max_bytes`` is stopped and removed, instead of filling the
  disk.  HTTP errors read like the ``requests`` messages Cog users know
  (``404 Client Error: Not Found for url: http://...``).
* **Inline outputs**: without an upload URL, file outputs become
  ``data:<mime>;base64,<data>`` strings.  :func:`iter_data_uri_from_path`
  yields the URI in pieces so that a large file is never held twice in memory
  (raw bytes plus base64 text); callers that can write pieces (a JSON encoder,
  a socket) should prefer it over :func:`data_uri_from_path`.
* **Uploads** (``--upload-url``): :func:`upload` PUTs the file, streamed from
  disk with an explicit ``Content-Length``, and answers the URL the file can
  be read from (``Location`` if the server gave one, else the final request
  URL), without its query string, as coglet does.

Mime types come from a private :class:`mimetypes.MimeTypes` built from
Python's own table (plus a few modern types older Pythons lack), not from the
host's ``/etc/mime.types``, so the same file gets the same type everywhere.

Only ``http``, ``https`` and ``data`` URLs are fetched: the opener is built
without urllib's ``file:`` and ``ftp:`` handlers, so neither an input nor a
redirect can make the server read a local file.
"""

from __future__ import annotations

import base64
import binascii
import http
import http.client
import mimetypes
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator, Optional

from .errors import InputFetchError, OutputError

__all__ = [
    "guess_mime", "guess_extension", "data_uri", "data_uri_from_path", "iter_data_uri_from_path",
    "parse_data_uri", "filename_from_url", "fetch", "upload", "is_url", "DEFAULT_MIME",
    "FILENAME_MAX_BYTES", "FILE_INPUT_SCHEMES", "url_scheme", "file_input_problem",
]

DEFAULT_MIME = "application/octet-stream"
#: Cog truncates URL filenames to this many UTF-8 bytes, keeping the extension.
FILENAME_MAX_BYTES = 200
_ILLEGAL_FILENAME_CHARS = ("\0", "/")

# Read/write granularity for streaming downloads, uploads and data: URIs.  Not a limit:
# it only trades syscalls against memory.  A multiple of 3 so base64 pieces concatenate.
_CHUNK = 3 * 128 * 1024
# reqwest (coglet's HTTP client) follows at most 10 redirects; we keep the same policy.
_MAX_REDIRECTS = 10

_mime = mimetypes.MimeTypes()
for _ext, _type in ((".webp", "image/webp"), (".avif", "image/avif"), (".heic", "image/heic"),
                    (".flac", "audio/flac"), (".m4a", "audio/mp4"), (".ogg", "audio/ogg"),
                    (".opus", "audio/opus"), (".mkv", "video/x-matroska"), (".jsonl", "application/jsonl"),
                    (".md", "text/markdown"), (".yaml", "application/yaml"), (".yml", "application/yaml")):
    if _mime.guess_type("x" + _ext)[0] is None:
        _mime.add_type(_type, _ext)


def guess_mime(name: str) -> str:
    """The mime type for a file name (``.png`` → ``image/png``), else ``application/octet-stream``."""
    return _mime.guess_type(os.fspath(name))[0] or DEFAULT_MIME


def guess_extension(mime: str) -> Optional[str]:
    """An extension (``.png``) for a mime type, ignoring parameters; None if unknown."""
    base = mime.split(";", 1)[0].strip().lower()
    return _mime.guess_extension(base) if base else None


#: The URL schemes a ``Path``/``File`` input may use; anything else (``file:``, a bare
#: local path) would let a client make the model read the server's own files.
FILE_INPUT_SCHEMES = ("data", "http", "https")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_SUPPORTED = "'data', 'http', or 'https' is supported."


def url_scheme(value: str) -> str:
    """The lower-cased scheme of *value* (RFC 3986 syntax), or ``""`` if it has none.

    Looks at the first characters only: a data: URI input can be tens of megabytes,
    and ``urlsplit`` would copy all of it.
    """
    colon = value.find(":", 0, 40)
    head = value[:colon]
    if colon > 0 and head[0].isascii() and head[0].isalpha() and all(c in _SCHEME_CHARS for c in head):
        return head.lower()
    return ""


def is_url(value: object) -> bool:
    """True for strings Cog coerces into files: ``http(s)`` and ``data:`` URLs (any case)."""
    return isinstance(value, str) and url_scheme(value) in FILE_INPUT_SCHEMES


def file_input_problem(value: str) -> Optional[str]:
    """Why the string *value* cannot be a ``Path``/``File`` input, or None if it can.

    A URL of another scheme gets Cog's own text (``File.validate``): ``'file' is not
    a valid URL scheme. 'data', 'http', or 'https' is supported.``  A string with no
    scheme (a local path) is not a URL at all, and says so.
    """
    scheme = url_scheme(value)
    if scheme in FILE_INPUT_SCHEMES:
        return None
    if scheme:
        return f"'{scheme}' is not a valid URL scheme. {_SUPPORTED}"
    shown = value if len(value) <= 80 else value[:77] + "..."
    return f"{shown!r} is not a URL. {_SUPPORTED}"


# --- data: URIs ----------------------------------------------------------------------


def data_uri(data: bytes, mime: Optional[str] = None) -> str:
    """``data:<mime>;base64,<standard base64>`` (mime defaults to octet-stream)."""
    return f"data:{mime or DEFAULT_MIME};base64,{base64.b64encode(data).decode('ascii')}"


def iter_data_uri_from_path(path: "os.PathLike[str] | str", mime: Optional[str] = None, chunk: int = _CHUNK) -> Iterator[str]:
    """Yield a file's ``data:`` URI in pieces: the header, then base64 text per chunk.

    The pieces concatenate to exactly :func:`data_uri_from_path`'s result; only one
    chunk of the file is in memory at a time.
    """
    path = os.fspath(path)
    chunk = max(3, chunk - chunk % 3)  # whole base64 quanta, so pieces never need padding
    with open(path, "rb") as f:
        yield f"data:{mime or guess_mime(path)};base64,"
        while True:
            block = f.read(chunk)
            if not block:
                return
            yield base64.b64encode(block).decode("ascii")


def data_uri_from_path(path: "os.PathLike[str] | str", mime: Optional[str] = None) -> str:
    """A file's content as a ``data:`` URI; mime guessed from its name when not given."""
    return "".join(iter_data_uri_from_path(path, mime))


def parse_data_uri(uri: str) -> tuple[str, bytes]:
    """``data:[<mime>][;params][;base64],<data>`` → (mime with params, bytes).

    The mime defaults to ``text/plain`` as RFC 2397 says.  Base64 may be standard or
    URL-safe and may lack padding; non-base64 data is percent-decoded.  Raises
    :class:`~minicog.errors.InputFetchError` for anything that is not a data URI.
    """
    if not isinstance(uri, str) or not uri[:5].lower() == "data:":
        raise InputFetchError("not a data: URI")
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise InputFetchError("invalid data: URI: no ',' separates the media type from the data")
    params = [p.strip() for p in header.split(";")]
    is_base64 = len(params) > 1 and params[-1].lower() == "base64"
    if is_base64:
        params.pop()
    mime = ";".join(p for p in params if p) or "text/plain"
    if not is_base64:
        return mime, urllib.parse.unquote_to_bytes(payload)
    text = urllib.parse.unquote(payload) if "%" in payload else payload
    text = "".join(text.split())  # line breaks inside base64 are common and harmless
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return mime, base64.urlsafe_b64decode(text)
        return mime, base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputFetchError(f"invalid data: URI: bad base64 data ({exc})") from None


# --- filenames -------------------------------------------------------------------------


def _truncate_utf8(name: str, limit: int) -> str:
    """Shorten *name* to *limit* UTF-8 bytes as ``head~.ext`` (Cog's rule)."""
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    ext = os.path.splitext(name)[1]
    ext_bytes = ext.encode("utf-8")
    if len(ext_bytes) + 1 >= limit:  # a silly extension: keep what fits
        ext, ext_bytes = "", b""
    head = encoded[: limit - len(ext_bytes) - 1].decode("utf-8", errors="ignore")
    return f"{head}~{ext}"


def filename_from_url(url: str) -> str:
    """The filename Cog gives a URL input (``get_filename``).

    ``data:`` URLs → ``"file" + extension of the mime type`` (or ``"file"``); other
    URLs → the last path segment, ``unquote_plus``-decoded, cut to 200 UTF-8 bytes
    keeping the extension (``name~.ext``), with NUL and ``/`` replaced by ``_``.
    """
    if url[:5].lower() == "data:":
        mime = url[5:].partition(",")[0].split(";", 1)[0].strip() or "text/plain"
        ext = guess_extension(mime)
        return "file" + ext if ext else "file"
    name = urllib.parse.unquote_plus(os.path.basename(urllib.parse.urlsplit(url).path))
    name = _truncate_utf8(name, FILENAME_MAX_BYTES)
    for bad in _ILLEGAL_FILENAME_CHARS:
        name = name.replace(bad, "_")
    return name


# --- HTTP ------------------------------------------------------------------------------


class _NoPutRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects for GET only; uploads handle 307/308 themselves (the body must be re-sent)."""

    max_redirections = _MAX_REDIRECTS

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-HTTP URL refused: {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    # Built by hand so that file:, ftp: and data: handlers are absent (see module docstring).
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    _NoPutRedirects(), urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    opener.addheaders = []  # no default "Python-urllib" User-Agent (coglet sends none on uploads)
    return opener


def _status_text(code: int, reason: Optional[str] = None) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return reason or ""


def _http_error_message(code: int, reason: Optional[str], url: str) -> str:
    """The text of ``requests``' ``raise_for_status()``, which Cog users see."""
    kind = "Client Error" if 400 <= code < 500 else "Server Error" if 500 <= code < 600 else "Error"
    return f"{code} {kind}: {reason or _status_text(code)} for url: {url}"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__


def fetch(url: str, dest_dir: str, *, timeout: float, max_bytes: int, user_agent: Optional[str] = None) -> str:
    """Download an ``http(s)://`` or ``data:`` URL into a new file in *dest_dir*; return its path.

    The file is named like ``NamedTemporaryFile(suffix=<filename>)`` (``tmpab12cdimage.png``)
    and is the caller's to delete.  *timeout* bounds each socket operation (as
    ``requests``' ``timeout=``); more than *max_bytes* bytes → the partial file is
    removed and :class:`~minicog.errors.InputFetchError` raised.  Every failure
    raises that class with a message that names the URL or the problem.
    """
    scheme = url_scheme(url) if isinstance(url, str) else ""
    if scheme not in FILE_INPUT_SCHEMES:
        raise InputFetchError(f"'{scheme}' is not a valid URL scheme. {_SUPPORTED}")
    suffix = filename_from_url(url)
    if scheme == "data":
        _mime, data = parse_data_uri(url)
        if len(data) > max_bytes:
            raise InputFetchError(f"data: URI input is {len(data)} bytes, more than the limit of {max_bytes} bytes")
        fd, path = tempfile.mkstemp(suffix=suffix, dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            _unlink(path)
            raise
        return path

    headers = {"User-Agent": user_agent} if user_agent else {}
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        response = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise InputFetchError(_http_error_message(exc.code, exc.reason if isinstance(exc.reason, str) else None, exc.url or url)) from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise InputFetchError(f"failed to fetch {url}: {_reason(exc)}") from None
    with response:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise InputFetchError(f"{url} is {declared} bytes, more than the limit of {max_bytes} bytes")
        fd, path = tempfile.mkstemp(suffix=suffix, dir=dest_dir)
        try:
            total = 0
            with os.fdopen(fd, "wb") as f:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    total += len(block)
                    if total > max_bytes:
                        raise InputFetchError(f"{url} is larger than the limit of {max_bytes} bytes; download stopped")
                    f.write(block)
        except InputFetchError:
            _unlink(path)
            raise
        except (OSError, http.client.HTTPException) as exc:
            _unlink(path)
            raise InputFetchError(f"failed to fetch {url}: {_reason(exc)}") from None
        except BaseException:
            _unlink(path)
            raise
    return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _strip_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def upload(path: "os.PathLike[str] | str", upload_url: str, *, prediction_id: Optional[str], mime: Optional[str] = None, timeout: float) -> str:
    """PUT a file to ``{upload_url}/{basename}`` and return the URL it can be read from.

    Headers: ``Content-Type`` (guessed from the name unless *mime*), ``Content-Length``,
    ``X-Prediction-Id`` (percent-encoded unless printable ASCII) and ``Accept: */*``; the body is streamed from disk.  307/308
    redirects are followed (re-sending the file); the answer is the ``Location`` header
    if present, else the final URL, without query string.  *timeout* bounds each socket
    operation.  Failures raise :class:`~minicog.errors.OutputError` with coglet's texts.
    """
    path = os.fspath(path)
    base = upload_url if upload_url.endswith("/") else upload_url + "/"
    url = base + urllib.parse.quote(os.path.basename(path))
    headers = {"Content-Type": mime or guess_mime(path), "Accept": "*/*"}
    if prediction_id is not None:
        pid = str(prediction_id)
        # A header value must be latin-1 on the wire; ids outside printable ASCII (Cog allows
        # any string) go percent-encoded instead of failing the upload.
        headers["X-Prediction-Id"] = pid if pid.isascii() and pid.isprintable() and " " not in pid \
            else urllib.parse.quote(pid, safe="")
    opener = _opener()
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as body:
                request = urllib.request.Request(url, data=body, headers={**headers, "Content-Length": str(size)}, method="PUT")
                with opener.open(request, timeout=timeout) as response:
                    location = response.headers.get("Location")
                    final = response.geturl() or url
                    # drain so keep-alive servers are not left mid-response
                    response.read()
            return _strip_query(urllib.parse.urljoin(final, location) if location else final)
        except urllib.error.HTTPError as exc:
            location = exc.headers.get("Location") if exc.headers else None
            exc.close()
            if exc.code in (307, 308) and location:
                url = urllib.parse.urljoin(url, location)
                if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
                    raise OutputError(f"Failed to upload output: upload redirected to a non-HTTP URL: {url}") from None
                continue
            raise OutputError(f"Failed to upload output: upload returned status {exc.code} {_status_text(exc.code, str(exc.reason))}".rstrip()) from None
        except FileNotFoundError as exc:
            raise OutputError(f"Failed to upload output: cannot read {path}: {exc.strerror}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            raise OutputError(f"Failed to upload output: upload request failed: {_reason(exc)}") from None
    raise OutputError(f"Failed to upload output: upload request failed: more than {_MAX_REDIRECTS} redirects")
