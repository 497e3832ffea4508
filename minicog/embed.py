"""The embedding API: run a Cog predictor from your own Python code, or serve it in a thread.

Two entry points, both exported lazily from :mod:`minicog`:

:class:`Model`
    A context manager around the model's worker processes (the same
    :class:`~minicog.engine.Engine` the HTTP server uses), so
    the model runs exactly as it would behind ``python -m minicog serve``: its
    own process, its ``setup()`` once, inputs validated against the schema the
    worker built, file inputs fetched, outputs encoded.  Nothing of the model is
    imported into the caller's process::

        with minicog.Model("predict.py:Runner") as model:
            print(model.predict(prompt="hello"))
            for token in model.stream(prompt="hello"):
                print(token, end="")

    ``predict(**inputs)`` blocks and returns the output; ``stream(**inputs)``
    yields output items as the worker produces them (closing the iterator early
    cancels the prediction); ``submit(**inputs)`` returns a
    :class:`PredictionHandle` at once, with ``cancel()``, ``result(timeout)``
    and the live ``logs``.  ``submit_input(dict, ...)`` is the same with the
    inputs as one dict (for input names that are not Python identifiers, or
    that clash with keyword arguments) plus callbacks for logs and items.

:func:`serve_in_thread`
    Cog's HTTP API on a port of the caller's process (port 0 picks a free one),
    in a background thread, with a clean ``stop()``: what a test of an HTTP
    client needs.

Design notes and trade-offs:

* **Values in, values out.** Inputs are the JSON values of Cog's HTTP API.  A
  :class:`pathlib.Path` (any ``os.PathLike``) or an open binary file given for
  an input is sent as a ``data:`` URI, so the worker needs no access to the
  caller's files and the same rules apply as over HTTP; the price is that such
  a file is held in memory (base64) once, which is fine for the inputs a model
  takes by value and bounded by ``Settings.max_download_bytes``.  URLs are
  passed through and fetched by the worker.
* **File outputs are paths.** The worker writes file outputs into the
  prediction's temporary folder, which minicog removes when the prediction
  ends.  ``Model`` hard-links (or, across file systems, copies) each one into
  its own output folder as it arrives and hands back a :class:`pathlib.Path`.
  That folder is a temporary one removed by ``Model.close()`` unless you pass
  ``output_dir=``, in which case the files are yours to keep.
* **Errors are exceptions** from :mod:`minicog.errors`: invalid input raises
  :class:`~minicog.errors.InputValidationError` (Cog's ``detail`` list, all
  problems at once) before anything runs; a failed prediction raises
  :class:`~minicog.errors.PredictionError` whose ``prediction`` dict carries the
  error and the logs; a canceled one raises
  :class:`~minicog.errors.PredictionCanceled`.  A setup that fails raises
  :class:`~minicog.errors.LoadError` from ``start()``/``__enter__`` with the
  setup logs in its ``logs`` attribute.
* The engine calls a handle's listener methods on its I/O thread; they
  only append to lists under a condition variable (and link files), so the
  caller's thread does all waiting and the worker is never held up by a slow
  consumer beyond the protocol's own backpressure.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional

from . import errors, files
from .engine import rules
from .settings import Settings

__all__ = ["Model", "PredictionHandle", "serve_in_thread", "ServerHandle", "to_input_value"]

LogCallback = Callable[[str, str], None]
ItemCallback = Callable[[int, Any], None]

#: Seconds a poll loop sleeps between checks of the worker's state while waiting for setup.
_POLL = 0.05


def to_input_value(value: Any) -> Any:
    """Turn caller-side Python values into the JSON values Cog's API takes.

    ``os.PathLike`` objects and binary file objects become ``data:`` URIs; lists,
    tuples and dicts are converted item by item; everything else is returned as is
    (the schema validation reports what does not fit).
    """
    if isinstance(value, os.PathLike):
        return files.data_uri_from_path(value)
    if hasattr(value, "read") and not isinstance(value, (str, bytes)):
        data = value.read()
        if isinstance(data, str):
            data = data.encode("utf-8")
        name = getattr(value, "name", None)
        return files.data_uri(data, files.guess_mime(name) if isinstance(name, str) else None)
    if isinstance(value, (list, tuple)):
        return [to_input_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_input_value(v) for k, v in value.items()}
    return value


def output_is_array(schema: Optional[dict], mode: str = "predict") -> Optional[bool]:
    """Whether the schema's output is a list/iterator (None when the schema does not say)."""
    return rules.output_is_array(schema, mode)


class PredictionHandle:
    """One prediction submitted through :meth:`Model.submit`; also its orchestrator listener.

    ``status`` goes ``starting`` → ``processing`` → ``succeeded`` | ``failed`` |
    ``canceled``.  ``logs`` grows as the worker logs; ``metrics`` holds the
    model's recorded metrics.  ``result(timeout)`` waits for the end and returns
    the output or raises.  Iterating over the handle yields output items as they
    arrive (for iterator outputs).
    """

    def __init__(self, model: "Model", prediction_id: str, *, on_log: Optional[LogCallback] = None,
                 on_item: Optional[ItemCallback] = None):
        self.id = prediction_id
        self.status = "starting"
        self.error: Optional[str] = None
        self.metrics: Dict[str, Any] = {}
        self.is_stream: Optional[bool] = None
        #: ISO 8601 UTC times the prediction was dispatched and ended (None until then).
        self.started_at: Optional[str] = None
        self.completed_at: Optional[str] = None
        self._model = model
        self._on_log = on_log
        self._on_item = on_item
        self._logs: List[str] = []
        self._items: Dict[int, Any] = {}
        self._order: List[int] = []
        self._cond = threading.Condition()
        self._callback_error: Optional[BaseException] = None
        self._run: Any = None  # the engine's handle, set once submitted

    # -- what the caller uses ------------------------------------------------------------
    @property
    def logs(self) -> str:
        with self._cond:
            return "".join(self._logs)

    def done(self) -> bool:
        return self.status in rules.TERMINAL_STATUSES

    def cancel(self) -> bool:
        """Ask the worker to cancel; True if the prediction was still running."""
        if self.done() or self._run is None:
            return False
        return self._run.cancel()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the prediction ends; False if *timeout* seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.done():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # Short waits keep the calling thread responsive to KeyboardInterrupt.
                self._cond.wait(0.25 if left is None else min(left, 0.25))
        return True

    def result(self, timeout: Optional[float] = None) -> Any:
        """The output; raises PredictionError / PredictionCanceled, or TimeoutError after *timeout*."""
        if not self.wait(timeout):
            raise TimeoutError(f"prediction {self.id} did not finish within {timeout} seconds")
        if self.status == "canceled":
            raise errors.PredictionCanceled(f"prediction {self.id} was canceled", prediction=self.as_dict())
        if self.status == "failed":
            raise errors.PredictionError(f"prediction failed: {self.error}", prediction=self.as_dict())
        return self.output

    @property
    def output(self) -> Any:
        """The output assembled so far (the whole output once succeeded)."""
        with self._cond:
            items = [self._items[i] for i in sorted(self._items)]
        if self.is_stream:
            return items
        if not items:
            return None
        if len(items) == 1:
            value = items[0]
            if rules.output_is_array(self._model.schema, self._model.mode) and not isinstance(value, list):
                return [value]
            return value
        return items

    def as_dict(self) -> Dict[str, Any]:
        """A Cog-style prediction record (id, status, output, error, logs, metrics)."""
        return {
            "id": self.id, "status": self.status,
            "output": self.output if self.status == "succeeded" else None,
            "error": self.error, "logs": self.logs, "metrics": dict(self.metrics),
        }

    def __iter__(self) -> Iterator[Any]:
        """Output items in order as they arrive; raises like :meth:`result` at the end."""
        next_index = 0
        while True:
            with self._cond:
                while len(self._order) <= next_index and not self.done():
                    self._cond.wait(0.25)
                ready = self._order[next_index:]
                finished = self.done()
            for index in ready:
                with self._cond:
                    value = self._items[index]
                yield value
                next_index += 1
            if finished and next_index >= len(self._order):
                self.result(0)  # raises if failed/canceled
                return

    # -- fed by _Listener on the orchestrator's I/O thread --------------------------------
    def _call(self, fn: Optional[Callable], *args: Any) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as exc:  # a callback bug must not kill the I/O thread
            self._callback_error = exc

    def _set_status(self, status: str, **fields: Any) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat()
        with self._cond:
            for name, value in fields.items():
                setattr(self, name, value)
            if status == "processing":
                self.started_at = now
            elif status in ("succeeded", "failed", "canceled"):
                self.completed_at = now
            self.status = status
            self._cond.notify_all()

    def _log(self, source: str, data: str) -> None:
        with self._cond:
            self._logs.append(data)
            self._cond.notify_all()
        self._call(self._on_log, source, data)

    def _add(self, index: int, value: Any) -> None:
        with self._cond:
            self._items[index] = value
            self._order.append(index)
            self._cond.notify_all()
        self._call(self._on_item, index, value)

    def _metric(self, name: str, value: Any, mode: str) -> None:
        with self._cond:
            rules.merge_metric(self.metrics, name, value, mode)


class _Listener:
    """The orchestrator's listener for one :class:`PredictionHandle` (contract in docs/architecture.rst).

    A separate object because the contract's method names (``output``, ``log``)
    would clash with the handle's public attributes.
    """

    __slots__ = ("handle",)

    def __init__(self, handle: PredictionHandle):
        self.handle = handle

    def started(self) -> None:
        self.handle._set_status("processing")

    def log(self, source: str, data: str) -> None:
        self.handle._log(source, data)

    def output(self, index: int, value: Any) -> None:
        self.handle._add(index, value)

    def file_output(self, index: int, path: str, mime: Optional[str]) -> None:
        handle = self.handle
        try:
            kept: Any = handle._model._keep_file(handle.id, index, path, mime)
        except OSError as exc:
            handle._log("stderr", f"minicog: could not keep file output {index} ({path}): {exc}\n")
            kept = pathlib.Path(path)
        handle._add(index, kept)

    def metric(self, name: str, value: Any, mode: str) -> None:
        self.handle._metric(name, value, mode)

    def succeeded(self, is_stream: bool) -> None:
        self._release()
        self.handle._set_status("succeeded", is_stream=bool(is_stream))

    def failed(self, error: str) -> None:
        self._release()
        self.handle._set_status("failed", error=error)

    def canceled(self) -> None:
        self._release()
        self.handle._set_status("canceled")

    def _release(self) -> None:
        # File outputs were linked out as they arrived, so the run's temporary folder
        # can go as soon as it ends (the engine removes it right after this call).
        run = self.handle._run
        if run is not None:
            run.release()


class Model:
    """A predictor running in its own worker process; see the module docstring.

    ``ref`` is a predictor reference (``path/predict.py:Runner``); None resolves
    as the command line does (``cog.yaml`` in *cwd*, then ``COG_PREDICT_TYPE_STUB``
    / ``COG_TRAIN_TYPE_STUB``, then minicog's embedded default model).  *mode* is
    ``"predict"`` or ``"train"``.  *max_concurrency* overrides the slot count
    (several ``submit()`` calls then run at once).  *settings* defaults to
    ``Settings.from_env()``.  *setup_timeout* bounds ``start()`` in seconds (None
    waits as long as setup takes).  *on_setup_log(source, data)* receives the
    setup output as it is produced.  *output_dir* keeps file outputs there
    instead of in a temporary folder removed by :meth:`close`.
    """

    def __init__(self, ref: Optional[str] = None, *, mode: str = "predict", max_concurrency: Optional[int] = None,
                 settings: Optional[Settings] = None, cwd: Optional[str] = None,
                 setup_timeout: Optional[float] = None, on_setup_log: Optional[LogCallback] = None,
                 output_dir: Optional[str] = None, workers: Any = None, gpus: Any = None):
        from .engine import plan

        self.settings = settings or Settings.from_env()
        # What to run and with how many slots/workers: the rules the server uses too.
        self._plan = plan(ref, mode=mode, cwd=cwd, settings=self.settings, max_concurrency=max_concurrency,
                          workers=workers, gpus=gpus)
        self.cwd = self._plan.cwd
        self.ref = self._plan.ref
        self.mode = mode
        self.max_concurrency = max_concurrency
        self.workers = self._plan.workers
        self.setup_timeout = setup_timeout
        self._on_setup_log = on_setup_log
        self._keep_dir = output_dir
        self._out_dir: Optional[str] = None
        self._orchestrator: Any = None
        self._lock = threading.Lock()

    # -- life cycle ----------------------------------------------------------------------
    def start(self, *, wait: bool = True) -> "Model":
        """Spawn the workers and wait until setup finished; raises LoadError if it failed.

        With ``wait=False`` it returns at once; :meth:`wait_schema` then gives the
        schema before setup() ends, and :meth:`wait_ready` waits for the rest.
        """
        if self._orchestrator is not None:
            if wait:
                self.wait_ready()
            return self
        orch = self._plan.engine()
        self._orchestrator = orch
        self._started_at = time.monotonic()
        try:
            orch.start()
            if wait:
                self._wait_ready(orch)
        except BaseException:
            self.close()
            raise
        return self

    def wait_ready(self) -> None:
        """After ``start(wait=False)``: wait for setup (``setup_timeout``); LoadError if it fails."""
        if self._orchestrator is None:
            raise errors.ServiceUnavailable("the model is not started; call start() first")
        try:
            self._wait_ready(self._orchestrator)
        except BaseException:
            self.close()
            raise

    def wait_schema(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The schema as soon as the worker has built it, before setup() ends (None if it has none
        or failed to load; see :meth:`Orchestrator.wait_schema`)."""
        if self._orchestrator is None:
            return None
        return self._orchestrator.wait_schema(timeout)

    def _wait_ready(self, orch: Any) -> None:
        # Counted from start(): time spent in wait_schema() is setup time too.
        began = getattr(self, "_started_at", None) or time.monotonic()
        deadline = None if self.setup_timeout is None else began + self.setup_timeout
        shown = 0
        while True:
            ready = orch.wait_ready(_POLL)
            logs = _setup_logs(orch)
            if self._on_setup_log is not None and len(logs) > shown:
                self._on_setup_log("stdout", logs[shown:])
                shown = len(logs)
            if ready or orch.state == "READY":
                return
            if orch.state in ("SETUP_FAILED", "DEFUNCT", "STOPPED"):
                setup = getattr(orch, "setup", None)
                error = getattr(setup, "error", None) or f"worker state {orch.state}"
                exc = errors.LoadError(f"setup failed for {self.ref}: {error}")
                exc.logs = logs  # type: ignore[attr-defined]
                exc.error = error  # type: ignore[attr-defined]  # the worker's one-line reason
                raise exc
            if deadline is not None and time.monotonic() > deadline:
                exc = errors.LoadError(f"setup of {self.ref} did not finish within {self.setup_timeout} seconds")
                exc.logs = logs  # type: ignore[attr-defined]
                exc.error = f"Timed out: setup() did not finish within {self.setup_timeout:g} seconds"  # type: ignore[attr-defined]
                raise exc

    def close(self) -> None:
        """Stop the worker (in-flight predictions end as canceled/failed) and remove temporary outputs."""
        orch, self._orchestrator = self._orchestrator, None
        if orch is not None:
            orch.stop()
        out, self._out_dir = self._out_dir, None
        if out is not None and self._keep_dir is None:
            shutil.rmtree(out, ignore_errors=True)

    def __enter__(self) -> "Model":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- information ---------------------------------------------------------------------
    @property
    def schema(self) -> Optional[dict]:
        """The OpenAPI document the worker built from the predictor (None before start)."""
        return None if self._orchestrator is None else self._orchestrator.schema

    @property
    def streaming(self) -> bool:
        """True when the predictor is decorated with ``@streaming``."""
        return bool(self._orchestrator is not None and self._orchestrator.streaming)

    @property
    def input_component(self) -> str:
        return "TrainingInput" if self.mode == "train" else "Input"

    # -- predictions ---------------------------------------------------------------------
    def validate(self, inputs: Dict[str, Any]) -> Dict[str, Any]:
        """The cleaned input, or raise InputValidationError with every problem."""
        from .validation import validate_input

        if self._orchestrator is None:
            raise errors.ServiceUnavailable("the model is not started; use 'with Model(...) as model:' or call start()")
        value = {k: to_input_value(v) for k, v in inputs.items()}
        result = validate_input(self.schema or {}, value, component=self.input_component)
        if result.errors:
            raise errors.InputValidationError(result.errors)
        return result.value

    def submit_input(self, inputs: Dict[str, Any], *, on_log: Optional[LogCallback] = None,
                     on_item: Optional[ItemCallback] = None, context: Optional[Dict[str, str]] = None,
                     prediction_id: Optional[str] = None) -> PredictionHandle:
        """Start a prediction with *inputs* as a dict; returns at once.

        *on_log(source, data)* and *on_item(index, value)* are called on minicog's I/O
        thread as logs and output items arrive; keep them short.  Raises
        InputValidationError, ServiceUnavailable (not started / worker down) or
        AtCapacity (every slot busy).
        """
        cleaned = self.validate(inputs)
        handle = PredictionHandle(self, prediction_id or uuid.uuid4().hex, on_log=on_log, on_item=on_item)
        run = self._orchestrator.submit(handle.id, cleaned, _Listener(handle), context=context)
        handle._run = run
        if handle.done():
            run.release()  # it ended before the handle knew its run (release is idempotent)
        return handle

    def submit(self, **inputs: Any) -> PredictionHandle:
        """Start a prediction; returns a :class:`PredictionHandle` at once."""
        self._reject_unknown(inputs)
        return self.submit_input(inputs)

    def predict(self, **inputs: Any) -> Any:
        """Run one prediction and return its output (a list for iterator outputs)."""
        self._reject_unknown(inputs)
        return self.submit_input(inputs).result()

    def stream(self, **inputs: Any) -> Iterator[Any]:
        """Yield output items as they arrive; closing the iterator early cancels the prediction."""
        self._reject_unknown(inputs)
        handle = self.submit_input(inputs)
        return _stream(handle)

    def _reject_unknown(self, inputs: Dict[str, Any]) -> None:
        """A keyword argument the model does not take is a typo to report, not to drop.

        The HTTP API keeps Cog's rule (unknown keys are dropped with a warning),
        because a client may send a superset on purpose; a Python caller who
        writes ``predict(promt=...)`` wants to hear about it.  Cog's CLI refuses
        unknown inputs the same way (``validateKnownInputs`` in pkg/predict).
        """
        schemas = ((self.schema or {}).get("components") or {}).get("schemas") or {}
        component = schemas.get(self.input_component) or schemas.get("Input")
        if not isinstance(component, dict):
            return  # no schema: nothing to check against (the worker takes what it gets)
        known = component.get("properties") or {}
        unknown = sorted(k for k in inputs if k not in known)
        if unknown:
            valid = ", ".join(sorted(known)) or "none (the model takes no inputs)"
            raise errors.InputValidationError(
                [{"loc": ["body", "input", name], "msg": f"unknown input; valid inputs are: {valid}",
                  "type": "value_error.extra"} for name in unknown])

    # -- file outputs --------------------------------------------------------------------
    def _keep_file(self, prediction_id: str, index: int, path: str, mime: Optional[str]) -> pathlib.Path:
        with self._lock:
            if self._out_dir is None:
                if self._keep_dir is not None:
                    os.makedirs(self._keep_dir, exist_ok=True)
                    self._out_dir = self._keep_dir
                else:
                    self._out_dir = tempfile.mkdtemp(prefix="minicog-outputs-", dir=self.settings.tmp_dir)
            folder = os.path.join(self._out_dir, prediction_id)
        os.makedirs(folder, exist_ok=True)
        name = os.path.basename(path) or f"output.{index}"
        target = os.path.join(folder, name)
        if os.path.exists(target):  # two outputs with the same basename: keep both
            stem, ext = os.path.splitext(name)
            target = os.path.join(folder, f"{stem}.{index}{ext}")
        try:
            # A hard link is instant and costs no space; the worker's copy goes away
            # with the prediction's temporary folder, ours stays.
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        return pathlib.Path(target)


def _stream(handle: PredictionHandle) -> Iterator[Any]:
    try:
        yield from handle
    finally:
        if not handle.done():
            handle.cancel()
            handle.wait(handle._model.settings.cancel_grace_period + 5.0)


def _setup_logs(orch: Any) -> str:
    """What setup printed so far (not the error line the record appends on failure:
    the LoadError raised for it says the same, and it must be shown once)."""
    setup = getattr(orch, "setup", None)
    entries = getattr(setup, "entries", None)
    if isinstance(entries, list):
        return "".join(text for _, _, text in list(entries))
    logs = getattr(setup, "logs", None) if setup is not None else None
    if isinstance(setup, dict):
        logs = setup.get("logs")
    return logs or ""


class ServerHandle:
    """A running HTTP server started by :func:`serve_in_thread`: ``url``, ``port``, ``stop()``."""

    def __init__(self, service: Any):
        self.service = service
        self.port: int = service.port
        self.url: str = service.url

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until the model's setup finished (health READY)."""
        return self.service.wait_ready(timeout)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Drain (within the shutdown grace period or *timeout*), stop the worker, close the socket."""
        self.service.stop(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve_in_thread(ref: Optional[str] = None, *, host: str = "127.0.0.1", port: int = 0,
                    wait_ready: Optional[float] = None, **options: Any) -> ServerHandle:
    """Serve *ref* over Cog's HTTP API from a background thread of this process.

    Returns once the socket is bound (``port=0`` picks a free port, read it from
    ``.port``/``.url``); the model sets up in the background, so poll
    ``GET /health-check`` or pass ``wait_ready=seconds`` to wait for READY (a
    setup that fails or overruns raises LoadError).  *options* are those of
    :class:`minicog.server.service.Service` (``settings``, ``upload_url``,
    ``mode``, ``max_concurrency``, ``await_explicit_shutdown``, ``cwd``, ``env``,
    ``workers``, ``gpus``).
    Use the result as a context manager, or call ``stop()``.
    """
    from .server.service import Service  # serving is the one reason to import the server

    service = Service(ref, host=host, port=port, **options)
    ref = service.ref
    service.start()
    handle = ServerHandle(service)
    if wait_ready is not None and not service.wait_ready(wait_ready):
        state = getattr(getattr(service, "orchestrator", None), "state", "unknown")
        handle.stop()
        raise errors.LoadError(f"{ref} did not become ready within {wait_ready} seconds (worker state {state})")
    return handle
