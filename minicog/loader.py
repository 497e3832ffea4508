"""Predictor references → loaded, instantiated predictors.

A *reference* names Python code the way Cog does: ``path/to/file.py:Name``
(``Name`` is a class or a function), or just ``path/to/file.py``, in which
case a class called ``Runner`` is used, else ``Predictor`` (deprecated).
Relative paths are relative to the project directory (``cwd``).

:func:`load_predictor` imports the file under its base name (``predict.py``
→ module ``predict``, registered in ``sys.modules`` so pickling and
``typing.get_type_hints`` work), applies Cog's rules and instantiates classes
with no arguments; it never calls ``setup()``.  Everything that can go wrong
becomes a :class:`minicog.errors.LoadError` whose message says what to fix;
the original exception is chained and its text included.

Cog's rules (``cog.predictor.load_predictor_from_ref``), kept here:

* a class must define exactly one of ``run()`` / ``predict()`` in its own
  classes above ``BaseRunner`` (``<Name> must define either run() or
  predict(), not both`` / ``run or predict method not found: <Name>``);
* ``predict()`` and ``BasePredictor`` are deprecated (DeprecationWarning);
* without ``:Name``, a valid ``Runner`` wins over ``Predictor`` (UserWarning
  when both exist); ``Predictor`` alone gives a DeprecationWarning;
* functions are used as they are (no setup, no healthcheck).

Where minicog differs: in **train mode** a class only needs ``train()``
(Cog validates every class as a runner, so a ``Trainer`` with only
``train()`` fails to load there with ``run or predict method not found``).

:func:`choose_predictor` (and :func:`resolve_ref`) decide *which* reference to load when none is given:
explicit → ``cog.yaml`` in ``cwd`` (``run:``/``predict:``, or ``train:``) →
``COG_PREDICT_TYPE_STUB`` / ``COG_TRAIN_TYPE_STUB`` → the embedded default
model (:data:`minicog.models.DEFAULT_REF`, predict mode only).

cog.yaml's ``environment:`` list (``KEY=VALUE``) is what Cog bakes into the
image as ``ENV``; :func:`load_predictor` puts it into ``os.environ`` before it
imports the model, so module-level ``os.getenv`` sees it too.  A variable the
process already has wins, as ``docker run -e`` wins over the image's ``ENV``:
it is the local way to override one value without editing cog.yaml.

A reference may name a file inside a zip archive (``/app/minicog.pyz/minicog/
models/textgen.py``): that is how the embedded default model is found when
minicog runs as one ``.pyz`` file (``minicog bundle``); such files are imported
with :mod:`zipimport` instead of from the file system.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import sys
import traceback
import warnings
import zipfile
import zipimport
from types import ModuleType
from typing import Any, Callable, Mapping, Optional, Tuple

from . import compat
from .config import load_cog_yaml
from .errors import ConfigError, LoadError
from .sdk.predictor import validate_runner_class

__all__ = ["LoadedPredictor", "Choice", "parse_ref", "load_predictor", "choose_predictor", "resolve_ref", "zip_location",
           "apply_cog_yaml_environment", "MODES"]

MODES = ("predict", "train")


@dataclasses.dataclass
class LoadedPredictor:
    """A loaded predictor and what the worker needs to know to call it."""

    ref: str
    module: ModuleType
    #: The instance for class predictors; None for function predictors.
    instance: Any
    #: What to call with the inputs as keyword arguments.
    fn: Callable[..., Any]
    #: ``run``, ``predict``, ``train`` or the function's name.
    method_name: str
    setup: Optional[Callable[..., Any]]
    healthcheck: Optional[Callable[..., Any]]
    is_async: bool
    is_async_gen: bool
    is_generator: bool
    #: Decorated with ``@streaming``.
    streaming: bool
    #: From ``@concurrent(max=N)``; None when not decorated.
    concurrency_max: Optional[int]
    mode: str = "predict"
    #: The class or function name used (``Runner``, ``Predictor``, ``train`` ...).
    name: str = ""
    #: Absolute path of the predictor file.
    path: str = ""


def parse_ref(ref: str) -> Tuple[str, Optional[str]]:
    """Split ``file.py:Name`` into ``("file.py", "Name")`` (``Name`` may be None).

    Like Cog, the split is at the first ``:``.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise LoadError("empty predictor reference; use the form 'predict.py:Predictor'")
    path, sep, name = ref.strip().partition(":")
    if not path:
        raise LoadError(f"predictor reference {ref!r} has no file; use the form 'predict.py:Predictor'")
    if sep and not name:
        raise LoadError(f"predictor reference {ref!r} names no class or function after ':'; use the form 'predict.py:Predictor'")
    if sep and not name.isidentifier():
        raise LoadError(f"predictor reference {ref!r}: {name!r} is not a Python name; use the form 'predict.py:Predictor'")
    return path, (name if sep else None)


#: Path components :func:`zip_location` climbs at most (real paths are far shallower).
_MAX_PATH_DEPTH = 256


def zip_location(path: str) -> Optional[Tuple[str, str]]:
    """(archive, path inside it) when *path* lies inside a zip archive such as minicog.pyz.

    The path inside is ``/``-separated, as zip entries are named.  Only the path is
    looked at, not the archive's entries: a folder usually has no entry of its own,
    so whether the archive holds *path* is the caller's question.  None when no
    ancestor of *path* is a file, or the nearest one is not a zip archive.
    """
    head = path
    for _ in range(_MAX_PATH_DEPTH):  # bounded: one step per path component
        parent = os.path.dirname(head)
        if parent == head:
            return None
        if os.path.isfile(parent):
            if not zipfile.is_zipfile(parent):
                return None
            return parent, os.path.relpath(path, parent).replace(os.sep, "/")
        head = parent
    return None


def _zip_member(path: str) -> Optional[Tuple[str, str]]:
    """:func:`zip_location` of *path* if the archive holds that file, else None."""
    location = zip_location(path)
    if location is None:
        return None
    try:
        with zipfile.ZipFile(location[0]) as archive:
            archive.getinfo(location[1])
    except (KeyError, OSError, zipfile.BadZipFile):
        return None
    return location


def _spec_for(path: str, module_name: str) -> Any:
    member = _zip_member(path) if not os.path.exists(path) else None
    if member is None:
        return importlib.util.spec_from_file_location(module_name, path)
    archive, inner = member
    folder = os.path.dirname(inner)
    importer = zipimport.zipimporter(os.path.join(archive, folder) if folder else archive)
    return importer.find_spec(module_name)


def _import_file(path: str, ref: str) -> ModuleType:
    module_name = os.path.basename(path)
    if module_name.endswith(".py"):
        module_name = module_name[:-3]
    spec = _spec_for(path, module_name)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path} (from {ref!r}): not a Python source file; use a .py file")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, like a normal import, so the module can be
    # found by pickle and by typing.get_type_hints (string annotations).
    previous = sys.modules.get(module_name)
    sys.modules[module_name] = module
    # Sibling imports (``from helpers import x``) work as when running the
    # file directly: its folder goes on sys.path if it is not there.
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        if previous is not None:
            sys.modules[module_name] = previous
        else:
            sys.modules.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise LoadError(_import_failure(exc, path)) from exc
    return module


def _import_failure(exc: BaseException, path: str) -> str:
    """``failed to import FILE (line N): Type: message (hint)`` for an exception raised importing *path*.

    FILE is the model's file where the error happened (the deepest frame outside
    minicog and the import machinery), so a bug in a helper module is named there.
    """
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    filename, line = None, None
    if isinstance(exc, SyntaxError):
        filename, line = exc.filename, exc.lineno
        text = f"{type(exc).__name__}: {exc.msg}"
    else:
        for frame in traceback.extract_tb(exc.__traceback__):
            if not frame.filename.startswith(("<frozen ", here)):
                filename, line = frame.filename, frame.lineno
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    hint = ("install the missing package in this Python environment"
            if isinstance(exc, ImportError) else "fix the error in the predictor's code")
    if line and filename and os.path.abspath(filename) != os.path.abspath(path):
        where = f": {filename}, line {line}"  # the error is in a module the predictor imports
    else:
        where = f" (line {line})" if line else ""
    return f"failed to import {path}{where}: {text} ({hint})"


def _pick_default(module: ModuleType, path: str) -> str:
    """Cog's choice when the reference has no ``:Name``."""
    runner = getattr(module, "Runner", None)
    runner_error: Optional[str] = None
    valid_runner = False
    if inspect.isclass(runner):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                validate_runner_class(runner, "Runner")
            valid_runner = True
        except ValueError as exc:
            runner_error = str(exc)
    elif runner is not None:
        valid_runner = callable(runner)
        if not valid_runner:
            runner_error = "Runner exists but is not a class or callable"
    if valid_runner:
        if hasattr(module, "Predictor"):
            warnings.warn(
                "Both Runner and Predictor are defined; using Runner. Specify a class "
                "name explicitly if this is not intended.",
                UserWarning,
                stacklevel=3,
            )
        return "Runner"
    if hasattr(module, "Predictor"):
        warnings.warn("Predictor is deprecated; use Runner instead", DeprecationWarning, stacklevel=3)
        return "Predictor"
    if runner_error is not None:
        raise LoadError(runner_error)
    raise LoadError(
        f"module {module.__name__!r} has no Runner or Predictor. "
        f"Define a Runner class in {path}, or name the class: '{os.path.basename(path)}:ClassName'."
    )


def apply_cog_yaml_environment(directory: str, environ: Optional[Any] = None) -> dict[str, str]:
    """Set the ``environment:`` entries of ``directory``/cog.yaml that ``environ`` lacks.

    Returns the variables it set.  No cog.yaml, or one without ``environment``,
    changes nothing; a cog.yaml that cannot be read raises :class:`LoadError`.
    """
    env = os.environ if environ is None else environ
    yaml_path = os.path.join(directory, "cog.yaml")
    if not os.path.isfile(yaml_path):
        return {}
    try:
        config = load_cog_yaml(yaml_path)
    except ConfigError as exc:
        raise LoadError(str(exc)) from exc
    applied = {}
    for key, value in config.environment.items():
        if key not in env:
            env[key] = applied[key] = value
    return applied


def load_predictor(ref: str, *, mode: str = "predict", cwd: Optional[str] = None) -> LoadedPredictor:
    """Import ``ref`` and return the callable to serve, without running setup().

    ``mode`` is ``"predict"`` (``run``/``predict``) or ``"train"`` (``train``).
    ``cwd`` is the project directory relative paths start from (default: the
    current directory).
    """
    if mode not in MODES:
        raise LoadError(f"unknown mode {mode!r}; use 'predict' or 'train'")
    compat.install()  # model files say ``import cog``
    rel_path, name = parse_ref(ref)
    base = os.path.abspath(cwd) if cwd else os.getcwd()
    path = os.path.normpath(os.path.join(base, os.path.expanduser(rel_path)))
    if not os.path.exists(path) and _zip_member(path) is None:
        raise LoadError(f"predictor file not found: {path} (from reference {ref!r}); check the path, "
                        "which is relative to the project directory")
    if os.path.isdir(path):
        raise LoadError(f"predictor reference {ref!r} names a directory ({path}); name a .py file: 'predict.py:Predictor'")

    apply_cog_yaml_environment(base)
    module = _import_file(path, ref)
    if name is None:
        name = _pick_default(module, path)
    try:
        target = getattr(module, name)
    except AttributeError:
        candidates = sorted(k for k, v in vars(module).items()
                            if not k.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
                            and getattr(v, "__module__", None) == module.__name__)
        hint = f" It defines: {', '.join(candidates)}." if candidates else ""
        raise LoadError(f"{path} has no class or function named {name!r} (from reference {ref!r}).{hint}") from None

    if inspect.isclass(target):
        return _load_class(target, name, module, ref, path, mode)
    if callable(target):
        return _describe(ref=ref, module=module, instance=None, fn=target,
                         method_name=getattr(target, "__name__", name), setup=None, healthcheck=None,
                         mode=mode, name=name, path=path)
    raise LoadError(f"{name!r} in {path} is a {type(target).__name__}, not a class or function")


def _load_class(cls: type, name: str, module: ModuleType, ref: str, path: str, mode: str) -> LoadedPredictor:
    if mode == "train":
        if not callable(getattr(cls, "train", None)):
            raise LoadError(f"Training not supported by this predictor: {name} has no train() method. "
                            "Define train(), or name a training function: 'train.py:train'.")
        method_name = "train"
    else:
        try:
            method_name = validate_runner_class(cls, name, stacklevel=4)
        except ValueError as exc:
            raise LoadError(str(exc)) from None
    try:
        instance = cls()
    except Exception as exc:
        raise LoadError(f"failed to create {name}() from {path}: {type(exc).__name__}: {exc}. "
                        "Predictor classes are created with no arguments; move work to setup().") from exc
    setup = getattr(instance, "setup", None)
    healthcheck = getattr(instance, "healthcheck", None)
    return _describe(ref=ref, module=module, instance=instance, fn=getattr(instance, method_name),
                     method_name=method_name, setup=setup if callable(setup) else None,
                     healthcheck=healthcheck if callable(healthcheck) else None,
                     mode=mode, name=name, path=path)


def _describe(*, ref: str, module: ModuleType, instance: Any, fn: Callable[..., Any], method_name: str,
              setup: Optional[Callable[..., Any]], healthcheck: Optional[Callable[..., Any]],
              mode: str, name: str, path: str) -> LoadedPredictor:
    is_async_gen = inspect.isasyncgenfunction(fn)
    concurrency = getattr(fn, "__cog_concurrent_max__", None)
    return LoadedPredictor(
        ref=ref, module=module, instance=instance, fn=fn, method_name=method_name,
        setup=setup, healthcheck=healthcheck,
        is_async=inspect.iscoroutinefunction(fn) or is_async_gen,
        is_async_gen=is_async_gen,
        is_generator=inspect.isgeneratorfunction(fn),
        streaming=bool(getattr(fn, "__cog_streaming__", False)),
        concurrency_max=concurrency if isinstance(concurrency, int) else None,
        mode=mode, name=name, path=path,
    )


@dataclasses.dataclass
class Choice:
    """Which predictor reference to load, where it came from, and what to tell the operator."""

    ref: str
    #: ``argument``, ``cog.yaml``, ``COG_PREDICT_TYPE_STUB``, ``COG_TRAIN_TYPE_STUB`` or ``default``.
    source: str
    #: One-line remarks for the start-up log: cog.yaml's ignored keys, the demo model.
    notes: list = dataclasses.field(default_factory=list)


def choose_predictor(explicit: Optional[str], *, mode: str = "predict", cwd: Optional[str] = None,
                     environ: Optional[Mapping[str, str]] = None) -> Choice:
    """Pick the reference to serve: explicit → cog.yaml → environment → default model.

    A ``cog.yaml`` in *cwd* is read even when a reference is given, so a file Cog
    would refuse (unknown top-level keys, bad YAML, unreadable) stops the command
    before anything starts; one that names no predictor (no ``run:``/``predict:``,
    or no ``train:`` in train mode) is an error too unless a reference comes from
    the command line or the ``*_TYPE_STUB`` variables - never the demo model, which
    would hide a typo such as ``predictor:``.  Errors are :class:`LoadError`s whose
    text names the file, the line and the key.  References taken from cog.yaml are
    made absolute (relative to the file's folder); others are returned as given.
    """
    if mode not in MODES:
        raise LoadError(f"unknown mode {mode!r}; use 'predict' or 'train'")
    base = os.path.abspath(cwd) if cwd else os.getcwd()
    env = os.environ if environ is None else environ
    yaml_path = os.path.join(base, "cog.yaml")
    config = None
    notes: list = []
    if os.path.lexists(yaml_path):  # a directory or a dangling link is "cannot be read", not "absent"
        try:
            config = load_cog_yaml(yaml_path)
        except ConfigError as exc:
            raise LoadError(str(exc)) from exc
        notes.extend(f"{yaml_path}: {note}" for note in config.notes)
    if explicit:
        return Choice(explicit, "argument", notes)
    if config is not None:
        from_yaml = config.train if mode == "train" else config.predict
        if from_yaml:
            path, name = parse_ref(from_yaml)
            return Choice(os.path.join(config.directory, path) + (f":{name}" if name else ""), "cog.yaml", notes)
    stub_names = ("COG_TRAIN_TYPE_STUB", "COG_PREDICT_TYPE_STUB") if mode == "train" else ("COG_PREDICT_TYPE_STUB",)
    for stub_name in stub_names:
        if env.get(stub_name):
            return Choice(env[stub_name], stub_name, notes)
    if config is not None:
        if mode == "train":
            raise LoadError(f"{yaml_path}: no 'train:' key names the training function, so there is nothing to "
                            "train; add a line such as 'train: \"train.py:train\"', or pass --predictor REF")
        raise LoadError(f"{yaml_path}: no 'run:' (or 'predict:') key names the predictor, so there is nothing to "
                        "serve; add a line such as 'run: \"predict.py:Runner\"', or pass a reference "
                        "(minicog serve predict.py:Runner)")
    if mode == "predict":
        try:
            from .models import DEFAULT_REF
        except ImportError:
            DEFAULT_REF = None
        if DEFAULT_REF:
            notes.append(f"no model was named (no reference given, no cog.yaml in {base}, no COG_PREDICT_TYPE_STUB): "
                         "using minicog's built-in demo model, a small text generator. To use yours, name it: "
                         "'minicog serve predict.py:Runner' (or --predictor predict.py:Runner), or put "
                         "'run: \"predict.py:Runner\"' in a cog.yaml in this folder")
            return Choice(DEFAULT_REF, "default", notes)
    raise LoadError("no training function was named: pass a reference such as 'train.py:train', "
                    f"add 'train:' to a cog.yaml in {base}, or set COG_TRAIN_TYPE_STUB")


def resolve_ref(explicit: Optional[str], *, mode: str = "predict", cwd: Optional[str] = None,
                environ: Optional[Mapping[str, str]] = None) -> str:
    """The reference :func:`choose_predictor` picks (see there for the rules)."""
    return choose_predictor(explicit, mode=mode, cwd=cwd, environ=environ).ref
