"""``BaseRunner`` / ``BasePredictor`` and the ``@concurrent`` / ``@streaming`` decorators.

A model is a class with ``setup()`` and exactly one of ``run()`` (current
Cog) or ``predict()`` (deprecated spelling).  The base class supplies
``setup(self, weights=None)``, metric helpers (``record_metric``, ``scope``)
and a bridge so that calling ``runner.run(...)`` on a class that only
defines ``predict`` still works (and vice versa, with a DeprecationWarning).

``validate_runner_class`` holds Cog's load-time rules (one of run/predict,
defined by the user's classes above BaseRunner; DeprecationWarnings for
``predict`` and ``BasePredictor``); :mod:`minicog.loader` calls it.

Decorators mark functions with attributes that the loader and the schema
builder read, rather than wrapping them, so signatures and ``inspect``
results stay the user's own:

* ``@concurrent`` / ``@concurrent(max=N)`` sets ``fn.__cog_concurrent_max__``;
  ``max > 1`` is only allowed on ``async def`` functions (Cog checks this when
  the decorator runs, i.e. when the model file is imported).
* ``@streaming`` / ``@streaming()`` sets ``fn.__cog_streaming__ = True``
  (published as ``x-cog-streaming`` in the schema).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Optional, TypeVar, Union, overload

from .scope import Scope, current_scope

__all__ = ["BaseRunner", "BasePredictor", "concurrent", "streaming", "validate_runner_class", "user_method_owner"]

_F = TypeVar("_F", bound=Callable[..., Any])


class BaseRunner:
    """Base class for models: override ``setup()`` and ``run()``."""

    def setup(self, weights: Optional[Any] = None) -> None:
        """Load the model once, before the first prediction.

        ``weights`` is ``COG_WEIGHTS`` (a string) when the environment sets it.
        """

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Run one prediction; override with typed parameters."""
        cls = type(self)
        if user_method_owner(cls, "predict") is not None and user_method_owner(cls, "run") is None:
            return self.predict(*args, **kwargs)
        raise NotImplementedError("run has not been implemented by parent class.")

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        """Deprecated spelling of ``run()``."""
        warnings.warn(
            f"{type(self).__name__}.predict() is deprecated; use run() instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.run(*args, **kwargs)

    @property
    def scope(self) -> Scope:
        """The current prediction's scope (a no-op scope outside predictions)."""
        return current_scope()

    def record_metric(self, key: str, value: Any, mode: str = "replace") -> None:
        """Record a metric on the current prediction (no-op outside one)."""
        current_scope().record_metric(key, value, mode=mode)


class BasePredictor(BaseRunner):
    """Deprecated alias of :class:`BaseRunner`."""


def user_method_owner(cls: type, name: str) -> Optional[type]:
    """The first class in ``cls``'s MRO above the framework bases that defines ``name``."""
    for owner in inspect.getmro(cls):
        if owner in (BaseRunner, BasePredictor, object):
            # Stop at the framework: mixins listed after BaseRunner don't count.
            break
        if callable(owner.__dict__.get(name)):
            return owner
    return None


def validate_runner_class(cls: type, class_name: str, *, stacklevel: int = 3) -> str:
    """Apply Cog's rules to a model class; return ``"run"`` or ``"predict"``.

    Raises ``ValueError`` with Cog's messages; warns (DeprecationWarning) for
    ``predict()`` and for ``BasePredictor``.
    """
    defines_run = user_method_owner(cls, "run") is not None
    defines_predict = user_method_owner(cls, "predict") is not None
    if defines_run and defines_predict:
        raise ValueError(f"{class_name} must define either run() or predict(), not both")
    if not defines_run and not defines_predict:
        raise ValueError(f"run or predict method not found: {class_name}")
    if defines_predict:
        warnings.warn(f"{class_name}.predict() is deprecated; use run() instead", DeprecationWarning, stacklevel=stacklevel)
    if any(base is BasePredictor for base in inspect.getmro(cls)[1:]):
        warnings.warn("BasePredictor is deprecated; use BaseRunner instead", DeprecationWarning, stacklevel=stacklevel)
    return "run" if defines_run else "predict"


@overload
def concurrent(fn: _F) -> _F: ...
@overload
def concurrent(fn: None = None, *, max: int = 1) -> Callable[[_F], _F]: ...  # noqa: A002


def concurrent(fn: Optional[_F] = None, *, max: int = 1) -> Union[_F, Callable[[_F], _F]]:  # noqa: A002 - Cog's keyword
    """Allow up to ``max`` predictions at once on an async run()/predict()."""
    if isinstance(max, bool) or not isinstance(max, int):
        raise TypeError("concurrent max must be an integer")
    if max < 1:
        raise ValueError("concurrent max must be at least 1")

    def decorate(inner: _F) -> _F:
        if max > 1 and not (inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)):
            raise TypeError("concurrent max greater than 1 requires an async function")
        inner.__cog_concurrent_max__ = max  # type: ignore[attr-defined]
        return inner

    if fn is None:
        return decorate
    if not callable(fn):
        raise TypeError("concurrent must be used as @concurrent or @concurrent(max=...)")
    return decorate(fn)


@overload
def streaming(fn: _F) -> _F: ...
@overload
def streaming(fn: None = None) -> Callable[[_F], _F]: ...


def streaming(fn: Optional[_F] = None) -> Union[_F, Callable[[_F], _F]]:
    """Mark run()/predict() as streaming (``x-cog-streaming`` in the schema)."""

    def decorate(inner: _F) -> _F:
        inner.__cog_streaming__ = True  # type: ignore[attr-defined]
        return inner

    if fn is None:
        return decorate
    return decorate(fn)
