"""Turning a prediction's JSON input into the keyword arguments of run()/predict().

The parent has already validated the input against the schema (unknown keys
dropped, required ones present).  What is left is what only the worker can do,
because it needs the live signature (:func:`minicog.schema.describe_inputs`):

* ``Secret`` inputs: strings are wrapped in ``Secret``.
* ``Path``/``File`` inputs (alone, in a list, or optional): ``http(s)://`` and
  ``data:`` URLs are fetched with :func:`minicog.files.fetch` into the
  prediction's ``inputs/`` folder, all of them in parallel; a ``Path`` input
  becomes a :class:`minicog.sdk.Path`, a ``File`` input an open binary file.
  Any other string (``file:///etc/passwd``, a local path) is refused: the
  parent's validation answers 422 for it, and this check covers callers that
  skip validation (no schema).  Cog passes such strings on as paths.  A refused
  string or a failed fetch fails the prediction with ``Input validation error:
  <input name>: <reason>``.
* Omitted inputs whose default is an ``Input(...)`` get the default's value
  (``default_factory()`` if given), since Python would otherwise pass the
  ``FieldInfo`` object itself.
* Keys the function does not accept are dropped (it has no ``**kwargs``).

Everything fetched lives in ``inputs/`` and is removed by :meth:`Prepared.cleanup`
when the prediction ends, whatever the outcome; open files are closed first.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import inspect
import json
import os
import shutil
from typing import Any, Callable, Optional

from minicog.sdk.inputs import MISSING, FieldInfo
from minicog.sdk.types import Path, Secret

__all__ = ["InputError", "InputPlan", "Prepared", "prepare", "read_input_message", "takes_no_arguments"]

#: Parallel downloads per prediction (Cog uses 8).
_FETCH_WORKERS = 8
#: Seconds between two checks for a cancel while a sync prediction's downloads run.
_CANCEL_POLL = 0.05


class InputError(Exception):
    """An input could not be prepared; the message names the input."""


class Prepared:
    """The kwargs for the call plus what to clean up afterwards."""

    def __init__(self, kwargs: dict[str, Any], inputs_dir: Optional[str]):
        self.kwargs = kwargs
        self.inputs_dir = inputs_dir
        self.open_files: list[Any] = []

    def cleanup(self) -> None:
        for f in self.open_files:
            try:
                f.close()
            except Exception:
                pass
        self.open_files.clear()
        if self.inputs_dir and os.path.isdir(self.inputs_dir):
            shutil.rmtree(self.inputs_dir, ignore_errors=True)


def read_input_message(msg: dict) -> dict:
    """The input of a ``predict`` message: inline, or read from its spill file (then deleted)."""
    if "input_file" in msg and msg["input_file"]:
        path = msg["input_file"]
        try:
            with open(path, "rb") as f:
                data = f.read()
        finally:
            try:
                os.unlink(path)
                os.rmdir(os.path.dirname(path))  # the spill's folder, empty now (downloads remake it)
            except OSError:
                pass
        value = json.loads(data)
    else:
        value = msg.get("input", {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InputError("Input must be a JSON object")
    return value


def _file_url(name: str, value: Any, given: bool) -> bool:
    """True if *value* is a URL to fetch for the file input *name*.

    A string the client *given* that is not such a URL raises; a default from the
    code (``Input(default="weights/x.png")``) is the model author's and passes.
    """
    if not isinstance(value, str):
        return False
    from minicog.files import file_input_problem

    problem = file_input_problem(value)
    if problem is None:
        return True
    if given:
        raise InputError(f"{name}: {problem}")
    return False


def _local_file(path: str, kind: str, prepared: "Prepared") -> Any:
    """A file input the parent decoded already: a Path, or an open file for ``File``."""
    if kind == "file":
        f = open(path, "rb")
        prepared.open_files.append(f)
        return f
    return Path(path)


def _field_default(field: Any) -> Any:
    """The value an omitted ``Input(...)`` stands for, or ``inspect.Parameter.empty``."""
    factory = getattr(field, "default_factory", None)
    if factory is not None:
        return factory()
    default = getattr(field, "default", MISSING)
    return inspect.Parameter.empty if default is MISSING else default


@functools.lru_cache(maxsize=8)
def _parameters(fn: Callable) -> tuple[Any, bool]:
    """(parameters, takes **kwargs) of *fn*; cached: inspect.signature was a fifth of a null prediction."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    return params, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def takes_no_arguments(fn: Callable) -> bool:
    """True when *fn* declares no parameter at all (so an empty input is its whole call)."""
    params, _ = _parameters(fn)
    return not params


class InputPlan:
    """What :func:`prepare` needs to know of a function and its input specs, worked out once.

    A worker makes one after setup: per prediction, :func:`prepare` then filters
    the input by a set, fills in the omitted ``Input(...)`` defaults and looks only
    at the inputs that need more (secrets and files), instead of walking the
    signature and every spec each time (a fifth of a null prediction's time in the
    worker).
    """

    __slots__ = ("accepts_any", "accepted", "field_defaults", "special")

    def __init__(self, fn: Callable, specs: list[Any]) -> None:
        params, var_kw = _parameters(fn)
        #: The function takes ``**kwargs``: every input key is passed on.
        self.accepts_any = var_kw
        #: Input keys passed on otherwise: the parameters and the schema's inputs.
        self.accepted = frozenset(params).union(s.name for s in specs)
        #: ``(name, FieldInfo)`` of the parameters declared as ``x = Input(...)``.
        self.field_defaults = tuple(
            (name, param.default) for name, param in params.items()
            if param.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
            and isinstance(param.default, FieldInfo))
        #: The specs of secret and file inputs, the only ones whose values change.
        self.special = tuple(s for s in specs if getattr(s, "is_secret", False) or getattr(s, "file_kind", None))


def prepare(fn: Callable, raw: dict[str, Any], specs: list[Any], inputs_dir: Optional[str], *,
            timeout: float, max_bytes: int, user_agent: Optional[str],
            local_files: Optional[list] = None, critical: Callable[[], Any] = contextlib.nullcontext,
            plan: Optional[InputPlan] = None) -> Prepared:
    """Build the call's kwargs from the validated JSON input *raw*; see the module docstring.

    *local_files* (``[[name, index or None, path]]``, the ``input_files`` of the
    predict message) are file inputs the parent already decoded: their paths are
    used as they are, nothing is fetched for them.  *critical* is the cancel guard's
    (:mod:`.cancel`): downloads are started and waited for in its critical sections,
    so a cancel raises between two short waits, never inside a future's lock.
    *plan*: ``InputPlan(fn, specs)``, made once by a caller that prepares often.
    """
    if plan is None:
        plan = InputPlan(fn, specs)
    if plan.accepts_any:
        kwargs: dict[str, Any] = dict(raw)
    else:
        accepted = plan.accepted
        kwargs = {name: value for name, value in raw.items() if name in accepted}

    # Omitted inputs declared as ``x = Input(...)``: substitute the default's value.
    for name, field in plan.field_defaults:
        if name not in kwargs:
            value = _field_default(field)
            if value is inspect.Parameter.empty:
                raise InputError(f"{name}: Field required")
            kwargs[name] = value

    # The folder is made only for downloads (below): without them cleanup has nothing to
    # remove, and skips even the stat.
    prepared = Prepared(kwargs, None)
    if not plan.special:
        return prepared
    local = {(str(n), i): str(p) for n, i, p in (local_files or ()) if isinstance(p, str)}
    downloads: list[tuple[str, Optional[int], str, str]] = []  # (name, list index, url, kind)
    for spec in plan.special:
        name = spec.name
        if name not in kwargs:
            continue
        value = kwargs[name]
        if getattr(spec, "is_secret", False) and isinstance(value, str):
            kwargs[name] = Secret(value)
        kind = getattr(spec, "file_kind", None)
        if kind:
            if isinstance(value, list):
                items = list(value)
                for i, item in enumerate(value):
                    if (name, i) in local:
                        items[i] = _local_file(local[(name, i)], kind, prepared)
                    elif _file_url(name, item, name in raw):
                        downloads.append((name, i, item, kind))
                if local:
                    kwargs[name] = items
            elif (name, None) in local:
                kwargs[name] = _local_file(local[(name, None)], kind, prepared)
            elif _file_url(name, value, name in raw):
                downloads.append((name, None, value, kind))

    if downloads:
        if not inputs_dir:
            raise InputError(f"{downloads[0][0]}: no folder to download into")
        os.makedirs(inputs_dir, exist_ok=True)
        prepared.inputs_dir = inputs_dir
        from minicog import files

        def one(url: str) -> str:
            return files.fetch(url, inputs_dir, timeout=timeout, max_bytes=max_bytes, user_agent=user_agent)

        with critical():
            pool = concurrent.futures.ThreadPoolExecutor(min(_FETCH_WORKERS, len(downloads)), thread_name_prefix="minicog-fetch")
            futures = [pool.submit(one, url) for (_n, _i, url, _k) in downloads]
        try:
            for (name, index, _url, kind), fut in zip(downloads, futures):
                try:
                    path = _result(fut, critical)
                except Exception as exc:
                    msg = str(exc) or type(exc).__name__
                    raise InputError(f"{name}: {msg}") from None
                if kind == "file":
                    obj: Any = open(path, "rb")
                    prepared.open_files.append(obj)
                else:
                    obj = Path(path)
                if index is None:
                    kwargs[name] = obj
                else:
                    kwargs[name] = list(kwargs[name])
                    kwargs[name][index] = obj
        except BaseException:
            with critical():
                for fut in futures:
                    fut.cancel()
            raise
        finally:
            with critical():
                pool.shutdown(wait=False)
    return prepared


def _result(fut: "concurrent.futures.Future[str]", critical: Callable[[], Any]) -> str:
    """*fut*'s result, waited for in short critical slices (a cancel raises between them)."""
    while True:
        with critical():
            if fut.done():
                return fut.result()
            concurrent.futures.wait((fut,), timeout=_CANCEL_POLL)
