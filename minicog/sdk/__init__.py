"""What a model author imports: minicog's implementation of Cog's ``cog`` SDK.

This package is also what ``import cog`` gives (see :mod:`minicog.compat`).
It imports nothing of minicog outside ``minicog.sdk``, so importing a model
file stays cheap and never starts server machinery.

Two deprecated names are provided lazily through module ``__getattr__``, as in
Cog, so that the deprecation notice is printed (once, to stderr, where
``warnings`` filters cannot hide it) only by models that still use them:
``emit_metric`` and ``ExperimentalFeatureWarning``.
"""

from __future__ import annotations

import sys as _sys
from typing import Any

from .exceptions import CancelationException
from .inputs import MISSING, FieldInfo, Input
from .predictor import BasePredictor, BaseRunner, concurrent, streaming
from .runtime import active
from .scope import MetricRecorder, Scope, current_scope
from .types import (
    AsyncConcatenateIterator,
    BaseModel,
    ConcatenateIterator,
    File,
    Opaque,
    Path,
    Secret,
    URLFile,
    URLPath,
)

__all__ = [
    "BaseRunner", "BasePredictor", "BaseModel", "Opaque", "Input", "FieldInfo", "MISSING",
    "Path", "Secret", "File", "URLFile", "URLPath", "ConcatenateIterator",
    "AsyncConcatenateIterator", "CancelationException", "current_scope", "Scope",
    "MetricRecorder", "streaming", "concurrent", "active",
    "ExperimentalFeatureWarning", "emit_metric",
]


class _ExperimentalFeatureWarning(FutureWarning):
    """Deprecated: no longer used; kept so ``warnings.filterwarnings(..., category=...)`` still works."""


_EMIT_METRIC_NOTICE = (
    "cog: emit_metric() is deprecated and will be removed in a future release. "
    "Use current_scope().record_metric(name, value) instead."
)
_EXPERIMENTAL_NOTICE = (
    "cog: ExperimentalFeatureWarning is deprecated and will be removed in a "
    "future release. Remove `ExperimentalFeatureWarning` from your imports "
    "and any associated `warnings.filterwarnings(...)` calls."
)


def _emit_metric(name: str, value: Any) -> None:
    """Deprecated: use ``current_scope().record_metric(name, value)``."""
    current_scope().record_metric(name, value)


_emit_metric.__name__ = "emit_metric"
_emit_metric.__qualname__ = "emit_metric"

# The module objects that already printed a notice for a given name; the
# ``cog`` alias and ``minicog`` share these values, and the notice must be
# printed at most once per process whichever name the model used.
_noticed: set = set()


def _deprecated(name: str) -> Any:
    """The value of a deprecated name, printing its notice the first time."""
    if name == "emit_metric":
        value: Any = _emit_metric
        notice = _EMIT_METRIC_NOTICE
    elif name == "ExperimentalFeatureWarning":
        value, notice = _ExperimentalFeatureWarning, _EXPERIMENTAL_NOTICE
    else:
        raise KeyError(name)
    if name not in _noticed:
        _noticed.add(name)
        print(notice, file=_sys.stderr)
    return value


def __getattr__(name: str) -> Any:
    if name in ("emit_metric", "ExperimentalFeatureWarning"):
        value = _deprecated(name)
        globals()[name] = value  # cached: later lookups do not come here
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
