"""minicog: serve Cog models with the standard library only.

``import minicog`` gives the SDK a model author uses (the same names as Cog's
``cog`` package, see :mod:`minicog.sdk`), the error classes an embedder
catches, and - loaded lazily, on first use - the embedding API
(``Model``, ``serve_in_thread`` from :mod:`minicog.embed`).

Keeping the embedding API lazy matters: ``import minicog`` happens inside the
worker process for every model (via the ``cog`` alias) and must not pull in
the HTTP server, the engine or ``multiprocessing``.
"""

from __future__ import annotations

from typing import Any

from ._version import COG_VERSION, __version__
from .errors import InputValidationError, PredictionCanceled, PredictionError
from .sdk import (
    AsyncConcatenateIterator,
    BaseModel,
    BasePredictor,
    BaseRunner,
    CancelationException,
    ConcatenateIterator,
    FieldInfo,
    File,
    Input,
    Opaque,
    Path,
    Secret,
    URLFile,
    URLPath,
    active,
    concurrent,
    current_scope,
    streaming,
)
from . import sdk as _sdk

__all__ = [
    "__version__",
    "COG_VERSION",
    # Cog's public SDK names
    "BaseRunner", "BasePredictor", "BaseModel", "Opaque", "Input", "FieldInfo",
    "Path", "Secret", "File", "URLFile", "URLPath", "ConcatenateIterator",
    "AsyncConcatenateIterator", "CancelationException", "current_scope",
    "streaming", "concurrent",
    # minicog additions
    "active", "PredictionError", "PredictionCanceled", "InputValidationError",
    "Model", "serve_in_thread",
]

_LAZY_EMBED = ("Model", "serve_in_thread")


def __getattr__(name: str) -> Any:
    if name in _LAZY_EMBED:
        from . import embed

        value = getattr(embed, name)
        globals()[name] = value
        return value
    if name in ("emit_metric", "ExperimentalFeatureWarning"):
        # Deprecated Cog names: same lazy notice as ``cog.<name>``.
        value = getattr(_sdk, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
