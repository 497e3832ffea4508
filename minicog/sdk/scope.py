"""Per-prediction scope: metrics and request context (``cog.current_scope()``).

A :class:`Scope` belongs to one prediction.  It carries the request's
``context`` (``dict[str, str]``) and a :class:`MetricRecorder` that validates
each metric operation with Cog's rules (name syntax, reserved names, modes,
value types, one type per key until deleted) and hands the accepted operation
to an ``emit(name, value, mode)`` callback supplied by the worker, which sends
it to the parent.  Validation happens here, in the model's thread, so a bad
metric raises at the line that recorded it.

Finding the current scope (``current_scope()``) follows coglet:

1. a ``ContextVar`` - set per prediction thread or asyncio task with
   :func:`use_scope`, so concurrent predictions never see each other's scope;
2. a process-wide "sync scope" (:func:`set_sync_scope`) - the fallback for
   threads a sync prediction starts itself, which do not inherit ContextVars;
3. otherwise a no-op scope, so library code may record metrics
   unconditionally (outside a prediction nothing happens).

The emit modes are normalised to ``replace`` / ``increment`` / ``append``;
deleting a key (``delete``, ``del metrics[k]``, ``metrics[k] = None`` or
``record_metric(k, None)`` in any mode) is emitted as ``(name, None, "replace")``.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any, Callable, Dict, Optional

__all__ = [
    "Scope", "MetricRecorder", "current_scope", "use_scope", "set_sync_scope",
    "validate_metric_name", "normalize_mode", "MAX_METRIC_NAME_LENGTH", "MAX_METRIC_NAME_SEGMENTS",
]

#: Cog's limits on metric names.
MAX_METRIC_NAME_LENGTH = 128
MAX_METRIC_NAME_SEGMENTS = 4

Emit = Callable[[str, Any, str], None]


def _check_structure(name: str) -> None:
    if not name:
        raise ValueError("metric name must not be empty")
    if len(name) > MAX_METRIC_NAME_LENGTH:
        raise ValueError(
            f"metric name must be {MAX_METRIC_NAME_LENGTH} characters or fewer (got {len(name)} characters)"
        )
    segments = name.split(".")
    if len(segments) > MAX_METRIC_NAME_SEGMENTS:
        raise ValueError(
            f"metric name must have at most {MAX_METRIC_NAME_SEGMENTS} dot-separated segments (got {len(segments)})"
        )
    for i, segment in enumerate(segments):
        if not segment:
            if i == 0:
                raise ValueError("metric name must not start with a dot")
            if i == len(segments) - 1:
                raise ValueError("metric name must not end with a dot")
            raise ValueError("metric name must not contain empty segments (consecutive dots)")
        if not (segment[0].isascii() and segment[0].isalpha()):
            raise ValueError(f"metric name segment '{segment}' must start with a letter")
        prev_underscore = False
        for ch in segment[1:]:
            if ch == "_":
                if prev_underscore:
                    raise ValueError(f"metric name segment '{segment}' must not contain consecutive underscores")
                prev_underscore = True
            elif ch.isascii() and ch.isalnum():
                prev_underscore = False
            else:
                raise ValueError(f"metric name segment '{segment}' contains invalid character '{ch}'")
        if prev_underscore:
            raise ValueError(f"metric name segment '{segment}' must end with a letter or digit")


def validate_metric_name(name: str, *, for_delete: bool = False) -> None:
    """Raise ``ValueError`` (Cog's messages) if ``name`` is not a valid metric name.

    Deleting skips the reserved-name checks: deleting ``predict_time`` is harmless.
    """
    if not for_delete:
        if name == "predict_time":
            raise ValueError("'predict_time' is reserved by the runtime")
        if name.startswith("cog."):
            raise ValueError("the 'cog.' prefix is reserved for system metrics")
    _check_structure(name)


def normalize_mode(mode: Optional[str]) -> str:
    """Cog's accepted spellings → ``replace`` / ``increment`` / ``append``."""
    if mode is None or mode == "replace":
        return "replace"
    if mode in ("incr", "increment"):
        return "increment"
    if mode == "append":
        return "append"
    raise TypeError(f"Invalid metric mode: '{mode}'. Expected 'replace', 'incr', or 'append'.")


def _type_tag(value: Any) -> str:
    # bool before int: bool is a subclass of int.
    for tag, kind in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", list), ("dict", dict)):
        if isinstance(value, kind):
            return tag
    raise TypeError(
        f"Unsupported metric value type: {type(value).__name__}. Expected bool, int, float, str, list, or dict."
    )


def _to_json(value: Any) -> Any:
    """A plain-JSON copy of a metric value (so later mutation cannot change it)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"Cannot convert {type(k).__name__} to JSON metric value")
            out[k] = _to_json(v)
        return out
    raise TypeError(f"Cannot convert {type(value).__name__} to JSON metric value")


class MetricRecorder:
    """Records metrics for one prediction (``scope.metrics``).

    With ``emit=None`` it is the no-op recorder used outside predictions:
    operations are accepted and dropped (only an invalid mode still raises,
    as in coglet).  ``close()`` turns an active recorder into a no-op one when
    its prediction ends, so a thread that outlives the prediction cannot
    attach metrics to the next one.
    """

    def __init__(self, emit: Optional[Emit] = None) -> None:
        self._emit = emit
        self._types: Dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self._emit is not None

    def record(self, key: str, value: Any, mode: Optional[str] = None) -> None:
        """Record ``value`` under ``key`` (mode ``replace``, ``incr`` or ``append``).

        ``None`` deletes the key, whatever the mode (Cog's docs: "Setting a metric to
        ``None`` deletes it"; coglet's own recorder raises TypeError instead, which
        failed the prediction).
        """
        norm = normalize_mode(mode)
        if value is None:
            self.delete(key)
            return
        with self._lock:
            emit = self._emit
            if emit is None:
                return
            validate_metric_name(key)
            tag = _type_tag(value)
            existing = self._types.get(key)
            if existing is not None and existing != tag:
                raise TypeError(f"Metric '{key}' has type {existing}, cannot set to {tag} without deleting first")
            if norm == "increment" and tag not in ("int", "float"):
                raise TypeError(f"Increment mode requires int or float, got {tag}")
            payload = _to_json(value)
            self._types[key] = tag
            emit(key, payload, norm)

    def delete(self, key: str) -> None:
        """Remove ``key``; required before recording it with another type."""
        with self._lock:
            emit = self._emit
            if emit is None:
                return
            validate_metric_name(key, for_delete=True)
            self._types.pop(key, None)
            emit(key, None, "replace")

    def __setitem__(self, key: str, value: Any) -> None:
        if value is None:
            self.delete(key)
        else:
            self.record(key, value)

    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def close(self) -> None:
        with self._lock:
            self._emit = None

    def __repr__(self) -> str:
        if self._emit is None:
            return "MetricRecorder(inactive)"
        return f"MetricRecorder(keys={len(self._types)})"


class Scope:
    """One prediction's scope: ``metrics``, ``context`` and ``record_metric``."""

    def __init__(self, context: Optional[Dict[str, str]] = None, emit: Optional[Emit] = None) -> None:
        self._context: Dict[str, str] = dict(context or {})
        self._metrics = MetricRecorder(emit)

    @property
    def metrics(self) -> MetricRecorder:
        return self._metrics

    @property
    def context(self) -> Dict[str, str]:
        return self._context

    def record_metric(self, key: str, value: Any, mode: Optional[str] = None) -> None:
        """Shorthand for ``scope.metrics.record(key, value, mode)``."""
        self._metrics.record(key, value, mode)

    def close(self) -> None:
        """End of the prediction: later metric calls become no-ops."""
        self._metrics.close()

    def __repr__(self) -> str:
        return f"Scope({self._metrics!r})"


_SCOPE: contextvars.ContextVar[Scope] = contextvars.ContextVar("_coglet_metric_scope")
_sync_scope: Optional[Scope] = None
_sync_lock = threading.Lock()


def current_scope() -> Scope:
    """The running prediction's scope, or a no-op scope outside predictions."""
    scope = _SCOPE.get(None)
    if scope is not None:
        return scope
    with _sync_lock:
        scope = _sync_scope
    if scope is not None:
        return scope
    return Scope()


class use_scope:
    """``with use_scope(scope):`` makes *scope* current in this thread / asyncio task for
    the block (a class rather than a generator: it is entered for every prediction)."""

    __slots__ = ("_scope", "_token")

    def __init__(self, scope: Scope) -> None:
        self._scope = scope
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> Scope:
        self._token = _SCOPE.set(self._scope)
        return self._scope

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _SCOPE.reset(self._token)
            self._token = None


def set_sync_scope(scope: Optional[Scope]) -> None:
    """Set (or clear with ``None``) the process-wide fallback scope."""
    global _sync_scope
    with _sync_lock:
        _sync_scope = scope
