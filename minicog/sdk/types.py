"""The value types a model author annotates inputs and outputs with.

``Path``
    A ``pathlib.PosixPath`` subclass.  ``Path.validate(value)`` turns a local
    path into a ``Path`` and an ``http(s)://`` or ``data:`` URL into a
    :class:`URLPath` placeholder that downloads lazily (``convert()``), so the
    worker can fetch several URL inputs in parallel before calling ``run()``.
``URLPath``
    Keeps ``source`` (the URL; also what ``str()`` returns), ``filename`` and
    ``fileobj``; ``convert()`` copies ``fileobj`` into a named temporary file
    once and returns its ``Path``; ``unlink()`` removes that file.
``File`` (deprecated) / ``URLFile``
    ``File.validate`` gives an in-memory ``BytesIO`` for ``data:`` URLs and a
    lazy :class:`URLFile` for ``http(s)``; ``URLFile`` opens the URL on first
    use and survives pickling (only the URL and name are pickled).
``Secret``
    A string that hides itself in ``str``/``repr`` (and therefore in logs).
``ConcatenateIterator`` / ``AsyncConcatenateIterator``
    Generic markers for return annotations (``ConcatenateIterator[str]``); the
    schema shows them as token streams to concatenate.
``Opaque``
    A marker for ``Annotated[T, Opaque]``: treat ``T`` as an opaque JSON object.
``BaseModel``
    Subclasses become dataclasses automatically (Cog's rules, below).

Everything here uses only the standard library: downloads go through
``urllib.request`` with the ``COG_USER_AGENT`` header when set.  The SDK must
not import the rest of minicog, so the download timeout is read from the same
environment variable ``Settings.download_timeout`` uses.
"""

from __future__ import annotations

import dataclasses
import io
import mimetypes
import os
import pathlib
import shutil
import sys
import tempfile
import urllib.parse
from abc import abstractmethod
from typing import Any, AsyncIterator, Dict, Iterator, Optional, TypeVar

__all__ = [
    "Path", "URLPath", "File", "URLFile", "Secret", "ConcatenateIterator",
    "AsyncConcatenateIterator", "Opaque", "BaseModel", "get_filename",
]

#: Longest file name (UTF-8 bytes) kept from a URL; longer ones are shortened
#: to ``name~.ext`` (Cog's rule; also below common file system limits of 255).
FILENAME_MAX_BYTES = 200
_FILENAME_ILLEGAL = ("\0", "/")


def _download_timeout() -> float:
    # Mirrors Settings.download_timeout (MINICOG_DOWNLOAD_TIMEOUT, default 10 s,
    # Cog's requests timeout); read directly to keep the SDK import-light.
    try:
        value = float(os.environ.get("MINICOG_DOWNLOAD_TIMEOUT", "10"))
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


def _open_url(url: str) -> Any:
    """GET ``url`` (raises ``urllib.error.HTTPError`` on non-2xx)."""
    headers = {}
    agent = os.environ.get("COG_USER_AGENT")
    if agent:
        headers["User-Agent"] = agent
    # Imported here, not at the top: it costs ``import cog`` tens of ms (http.client, email, ssl).
    from urllib.request import Request, urlopen

    request = Request(url, headers=headers)
    return urlopen(request, timeout=_download_timeout())  # noqa: S310 - scheme checked by callers


def _truncate_filename(filename: str, limit: int = FILENAME_MAX_BYTES) -> str:
    if len(filename.encode("utf-8")) <= limit:
        return filename
    name, ext = os.path.splitext(filename)
    keep = limit - len(ext.encode("utf-8")) - 1
    head = name.encode("utf-8")[: max(keep, 0)].decode("utf-8", errors="ignore")
    return f"{head}~{ext}"


def _data_url_mime(url: str) -> str:
    # data:[<mediatype>][;base64],<data> - parse the header only; never decode
    # a possibly large payload just to learn its type.
    header = url[len("data:"):].split(",", 1)[0]
    mime = header.split(";", 1)[0].strip().lower()
    return mime or "text/plain"


def get_filename(url: str) -> str:
    """The file name to use for a URL input (Cog's ``get_filename``)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "data":
        ext = mimetypes.guess_extension(_data_url_mime(url))
        return "file" + ext if ext else "file"
    basename = urllib.parse.unquote_plus(os.path.basename(parsed.path))
    basename = _truncate_filename(basename)
    for char in _FILENAME_ILLEGAL:
        basename = basename.replace(char, "_")
    return basename


# --------------------------------------------------------------------- Secret


@dataclasses.dataclass(frozen=True)
class Secret:
    """A string that masks itself when printed; read it with ``get_secret_value()``."""

    secret_value: Optional[str] = None

    def __repr__(self) -> str:
        return f"Secret({self})"

    def __str__(self) -> str:
        return "**********" if self.secret_value is not None else ""

    def get_secret_value(self) -> Optional[str]:
        return self.secret_value


# -------------------------------------------------------------- URLFile, File


class URLFile(io.IOBase):
    """A read-only file object for an ``http(s)`` URL, opened on first use.

    Reading methods and unknown attributes are forwarded to the HTTP response
    object, which is created lazily.  Only the URL and ``name`` are pickled,
    so a URLFile can cross process boundaries and reopens on the other side.
    """

    def __init__(self, url: str, filename: Optional[str] = None) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https"):
            raise ValueError("URLFile requires URL to conform to HTTP or HTTPS protocol")
        self._url = url
        self.name = filename or os.path.basename(parsed.path)
        self._target: Any = None

    @property
    def url(self) -> str:
        return self._url

    def _response(self) -> Any:
        if self._target is None:
            self._target = _open_url(self._url)
        return self._target

    # Explicit forwards for the io.IOBase methods that would otherwise answer
    # from IOBase itself instead of from the response.
    def read(self, size: int = -1) -> bytes:
        return self._response().read(size)

    def readinto(self, buffer: Any) -> int:
        return self._response().readinto(buffer)

    def readline(self, size: Optional[int] = -1) -> bytes:
        return self._response().readline(-1 if size is None else size)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response())

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally; never for our own
        # private state (which avoids recursion while unpickling).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._response(), name)

    def close(self) -> None:
        target = self.__dict__.get("_target")
        if target is not None:
            try:
                target.close()
            finally:
                self._target = None
        super().close()

    def __getstate__(self) -> Dict[str, Any]:
        return {"name": self.name, "url": self._url}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self._url = state["url"]
        self.name = state["name"]
        self._target = None

    def __repr__(self) -> str:
        opened = "open" if self.__dict__.get("_target") is not None else "not opened"
        return f"<URLFile {self.__dict__.get('_url')!r} ({opened})>"


class File(io.IOBase):
    """Deprecated (use ``Path``): an input delivered as a file object."""

    @classmethod
    def validate(cls, value: Any) -> io.IOBase:
        if isinstance(value, io.IOBase):
            return value
        parsed = urllib.parse.urlparse(value)
        if parsed.scheme == "data":
            from urllib.request import urlopen

            # urllib decodes data: URLs (base64 or percent-encoded) itself.
            with urlopen(value) as response:  # noqa: S310 - data: only
                return io.BytesIO(response.read())
        if parsed.scheme in ("http", "https"):
            return URLFile(value)
        raise ValueError(
            f"'{parsed.scheme}' is not a valid URL scheme. "
            "'data', 'http', or 'https' is supported."
        )


# ---------------------------------------------------------------- Path, URLPath

_PATHLIB_312 = sys.version_info >= (3, 12)


class Path(pathlib.PosixPath):
    """A file input or output.  ``Path.validate`` also accepts URLs."""

    @classmethod
    def validate(cls, value: Any) -> pathlib.Path:
        if isinstance(value, pathlib.Path):
            return value
        scheme = urllib.parse.urlparse(value).scheme
        if scheme in ("data", "http", "https"):
            return URLPath(source=value, filename=get_filename(value), fileobj=File.validate(value))
        return Path(value)


class URLPath(pathlib.PosixPath):
    """A URL given for a ``Path`` input, not downloaded yet.

    It subclasses ``PosixPath`` only so ``isinstance(x, pathlib.Path)`` holds;
    the path part is just the file name.  ``str()`` is the source URL.
    """

    if _PATHLIB_312:
        def __new__(cls, *, source: str, filename: str, fileobj: io.IOBase) -> "URLPath":
            return object.__new__(cls)
    else:
        def __new__(cls, *, source: str, filename: str, fileobj: io.IOBase) -> "URLPath":
            return super().__new__(cls, _truncate_filename(filename) or "file")

    def __init__(self, *, source: str, filename: str, fileobj: io.IOBase) -> None:
        filename = _truncate_filename(filename)
        if _PATHLIB_312:
            super().__init__(filename or "file")
        self.source = source
        self.filename = filename
        self.fileobj = fileobj
        self._downloaded: Optional[Path] = None

    if _PATHLIB_312:
        def with_segments(self, *pathsegments: Any) -> Path:
            # Derived paths (parent, with_name...) are ordinary Paths.
            return Path(*pathsegments)

    def convert(self) -> Path:
        """Download once into a named temporary file; return its ``Path``."""
        if self._downloaded is None:
            dest = tempfile.NamedTemporaryFile(suffix=self.filename, delete=False)
            try:
                shutil.copyfileobj(self.fileobj, dest)
            except BaseException:
                dest.close()
                os.unlink(dest.name)
                raise
            dest.close()
            self._downloaded = Path(dest.name)
        return self._downloaded

    def unlink(self, missing_ok: bool = False) -> None:
        """Remove the downloaded file, if any (never the URL, of course)."""
        if self._downloaded is not None:
            self._downloaded.unlink(missing_ok=missing_ok)

    def __str__(self) -> str:
        source = self.__dict__.get("source")
        return source if source is not None else super().__str__()

    def __reduce__(self) -> Any:
        # Pickle as the URL string; the receiving side revalidates it.
        return (Path.validate, (self.source,))


# ------------------------------------------------------------------ Iterators

Item = TypeVar("Item")


class ConcatenateIterator(Iterator[Item]):
    """Return annotation for streamed text whose pieces are shown concatenated."""

    @abstractmethod
    def __next__(self) -> Item: ...


class AsyncConcatenateIterator(AsyncIterator[Item]):
    """Async variant of :class:`ConcatenateIterator`."""

    @abstractmethod
    async def __anext__(self) -> Item: ...


# --------------------------------------------------------------------- Opaque


class _OpaqueMarker:
    """Type of :data:`Opaque`; used as ``Annotated[T, Opaque]``."""

    _instance: Optional["_OpaqueMarker"] = None

    def __new__(cls) -> "_OpaqueMarker":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "cog.Opaque"

    def __reduce__(self) -> str:
        return "Opaque"


Opaque = _OpaqueMarker()


# ------------------------------------------------------------------ BaseModel


class BaseModel:
    """Base class for structured outputs; subclasses become dataclasses.

    ``class Output(BaseModel): text: str`` is equivalent to decorating it with
    ``@dataclass``.  Keyword arguments in the class statement are passed to
    ``dataclass()`` (``init=False``, ``frozen=True`` ...).  Cog's rules hold:
    the first base must be a BaseModel; dataclasses cannot be mixed in; with
    ``auto_dataclass=False`` the class is left alone, which is refused when
    its parent was auto-dataclassed (fields would be inherited wrongly).
    """

    def __init_subclass__(cls, *, auto_dataclass: bool = True, init: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__()
        primary = cls.__bases__[0]
        if not issubclass(primary, BaseModel):
            raise TypeError(f'Primary base class of "{cls.__name__}" must inherit from BaseModel')
        if not auto_dataclass and primary is not BaseModel:
            try:
                parent_auto = primary._BaseModel__auto_dataclass  # type: ignore[attr-defined]
            except AttributeError:
                raise RuntimeError(
                    f'Primary base class of "{cls.__name__}" is a child of a child '
                    "of `BaseModel`, but `auto_dataclass` tracking does not exist. "
                    "This is likely a bug or other programming error."
                ) from None
            if parent_auto is True:
                raise ValueError(
                    f'Primary base class of "{cls.__name__}" '
                    f'("{primary.__name__}") has auto_dataclass=True, '
                    f'but "{cls.__name__}" has auto_dataclass=False. '
                    "This creates broken field inheritance."
                )
        for base in cls.__bases__[1:]:
            if dataclasses.is_dataclass(base):
                raise TypeError(f'Cannot mixin dataclass "{base.__name__}" while inheriting from `BaseModel`')
        if not auto_dataclass:
            cls.__auto_dataclass = False
            return
        dataclasses.dataclass(init=init, **kwargs)(cls)
        cls.__auto_dataclass = True
