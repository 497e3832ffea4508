"""Make ``import cog`` (and ``import coglet``) give minicog's SDK.

Model files are written against Cog: ``from cog import BasePredictor, Input,
Path``, ``import cog; cog.Secret``, ``from cog.types import Path``.
:func:`install` registers module objects in ``sys.modules`` so all of those
work without a ``cog`` package on disk:

=================  =====================================================
``cog``            every public SDK name, ``__version__`` = Cog's release
                   (:data:`minicog._version.COG_VERSION`), lazy deprecated
                   ``emit_metric`` / ``ExperimentalFeatureWarning``
``cog.types``      :mod:`minicog.sdk.types`
``cog.input``      :mod:`minicog.sdk.inputs`
``cog.predictor``  :mod:`minicog.sdk.predictor`
``cog.model``      a module with ``BaseModel``
``cog.mode``       a module with the ``Mode`` enum (``predict`` / ``train``)
``cog._version``   ``__version__``
``coglet``         ``CancelationException``, ``__version__``, ``__build__``,
                   ``server.active`` (True only in the worker), ``_sdk.current_scope``
=================  =====================================================

The values are minicog's own objects, not copies: ``cog.Path is
minicog.Path``, so ``isinstance`` checks agree whichever name a model uses.

Policy when a real ``cog`` exists.  In the **worker** (``install(force=True)``)
minicog always installs its alias, replacing anything imported before: the
worker must hand the model minicog's ``Path``/``Secret``/scope, or inputs and
metrics would not be recognised.  **Elsewhere** (importing this module, tests,
an embedding application) the alias is installed only when no real ``cog`` is
already imported, so an application that uses Cog itself keeps it; a real
``cog`` that is installed on disk but not yet imported is shadowed, since a
process that imported minicog.compat asked for minicog's SDK.

Importing :mod:`minicog.compat` calls ``install()``; calling it again is a
no-op.
"""

from __future__ import annotations

import enum
import importlib.machinery
import sys
import types
from typing import Any, Dict, Optional

from . import sdk
from ._version import COG_VERSION, __version__ as MINICOG_VERSION
from .sdk import inputs as _inputs
from .sdk import predictor as _predictor
from .sdk import runtime as _runtime
from .sdk import scope as _scope
from .sdk import types as _types

__all__ = ["install", "installed", "Mode"]

#: Marks the module objects created here, to tell them from a real Cog.
_MARK = "__minicog_alias__"


class Mode(enum.Enum):
    """``cog.mode.Mode``: which entry point a model is served with."""

    PREDICT = "predict"
    TRAIN = "train"

    def __str__(self) -> str:
        return str(self.value)


class BuildInfo:
    """``coglet.__build__``: what a running server reports about its build."""

    def __init__(self) -> None:
        self.version = COG_VERSION
        self.git_sha = "minicog-" + MINICOG_VERSION
        self.dirty = False
        self.build_time = ""
        self.rustc_version = ""

    def __repr__(self) -> str:
        return f"BuildInfo(version={self.version!r}, git_sha={self.git_sha!r})"


class _Server:
    """``coglet.server``: only ``active`` is meaningful outside coglet."""

    @property
    def active(self) -> bool:
        return _runtime.active()

    def __repr__(self) -> str:
        return f"<minicog coglet.server active={self.active}>"


def _module(name: str, doc: str, attrs: Dict[str, Any], *, package: bool = False) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=package)
    if package:
        # An empty search path: submodules we do not provide fail with a
        # normal ModuleNotFoundError instead of finding unrelated files.
        module.__path__ = []
    setattr(module, _MARK, True)
    return module


def _cog_getattr(name: str) -> Any:
    # Deprecated names print their notice once per process, shared with
    # ``minicog.sdk`` (see minicog.sdk._deprecated).
    if name in ("emit_metric", "ExperimentalFeatureWarning"):
        value = sdk._deprecated(name)
        _modules_cache["cog"].__dict__[name] = value
        return value
    raise AttributeError(f"module 'cog' has no attribute {name!r}")


def _build() -> Dict[str, types.ModuleType]:
    public = {name: getattr(sdk, name) for name in sdk.__all__ if name not in ("emit_metric", "ExperimentalFeatureWarning")}
    mode = _module("cog.mode", "Prediction modes.", {"Mode": Mode, "__all__": ["Mode"]})
    model = _module("cog.model", "BaseModel.", {"BaseModel": _types.BaseModel, "__all__": ["BaseModel"]})
    version = _module("cog._version", "Cog version.", {"__version__": COG_VERSION})
    cog_all = [
        "__version__", "BaseRunner", "BasePredictor", "BaseModel", "Opaque", "Input", "FieldInfo",
        "Path", "Secret", "File", "URLFile", "URLPath", "ConcatenateIterator",
        "AsyncConcatenateIterator", "CancelationException", "current_scope", "streaming",
        "concurrent", "ExperimentalFeatureWarning", "emit_metric",
    ]
    cog = _module(
        "cog",
        "Cog's SDK, provided by minicog (minicog.sdk).",
        dict(public, __version__=COG_VERSION, __all__=cog_all, __getattr__=_cog_getattr,
             types=_types, input=_inputs, predictor=_predictor, model=model, mode=mode, _version=version),
        package=True,
    )
    sdk_mod = _module("coglet._sdk", "coglet's SDK hooks.", {"current_scope": _scope.current_scope,
                                                              "Scope": _scope.Scope,
                                                              "MetricRecorder": _scope.MetricRecorder})
    coglet = _module(
        "coglet",
        "coglet's Python surface, provided by minicog.",
        {"CancelationException": sdk.CancelationException, "__version__": COG_VERSION,
         "__build__": BuildInfo(), "server": _Server(), "_sdk": sdk_mod,
         "__all__": ["__version__", "__build__", "server", "CancelationException"]},
        package=True,
    )
    return {
        "cog": cog, "cog.types": _types, "cog.input": _inputs, "cog.predictor": _predictor,
        "cog.model": model, "cog.mode": mode, "cog._version": version,
        "coglet": coglet, "coglet._sdk": sdk_mod,
    }


_modules_cache: Dict[str, types.ModuleType] = {}


def installed() -> bool:
    """True when ``sys.modules['cog']`` is minicog's alias."""
    return getattr(sys.modules.get("cog"), _MARK, False) is True


def install(*, force: bool = False) -> bool:
    """Register the ``cog`` / ``coglet`` aliases; return True if minicog's are active.

    ``force=True`` (the worker) replaces a real ``cog``/``coglet`` that was
    imported earlier, together with its submodules.  Without it an existing
    real ``cog`` is left in place and False is returned.
    """
    if not _modules_cache:
        _modules_cache.update(_build())
    existing: Optional[types.ModuleType] = sys.modules.get("cog")
    if existing is not None and not getattr(existing, _MARK, False) and not force:
        return False
    if force:
        for name in list(sys.modules):
            if name.split(".")[0] in ("cog", "coglet") and name not in _modules_cache:
                del sys.modules[name]
    sys.modules.update(_modules_cache)
    return True


install()
