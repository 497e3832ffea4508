"""The worker process: load the model, run setup, then serve predictions on slots.

Started by the engine as ``python -m minicog.worker --control FD --slots FD,FD,...``
with the channel file descriptors inherited (never forked from the server).

Threads
-------
main thread
    Reads ``init``, installs output capture, runs load + ``setup()`` (sync setup
    here; async setup on the event loop), sends ``ready``, then reads its one
    slot channel itself and runs **sync** predictions one at a time (no hand-off
    through the I/O thread), inside :class:`~.cancel.CancelGuard` so SIGUSR1 can
    interrupt them.  It is the only thread Python delivers signals to.
event loop thread
    One asyncio loop, started before setup and used for async setup, every async
    prediction (up to ``num_slots`` tasks at once) and async healthchecks, so
    loop-bound objects made in setup stay usable.  It exists only when the model
    needs it (async run/predict, setup or healthcheck): a sync model's worker
    never imports asyncio, which keeps its start-up and memory smaller.
I/O thread
    Multiplexes the control channel and the slot channels with one
    :func:`select.poll` object kept for the worker's life (a sync model's slot is
    left to the main thread).  It never runs user code: it submits async
    predictions to the loop, turns
    ``cancel`` into SIGUSR1 (sync) or ``Task.cancel()`` (async), and starts a
    thread per ``healthcheck``.  It exits the process (``os._exit``) on
    ``shutdown``, when the control channel closes (the parent is gone) and when
    every slot channel is broken ("poisoned").
fd capture thread
    See :mod:`.logs`.

Slots and concurrency
---------------------
The parent opens ``num_slots`` channels before spawning.  When it knows the slot
count (``COG_MAX_CONCURRENCY``, then cog.yaml ``concurrency.max``, sent as
``max_concurrency`` in ``init``) it opens exactly that many; otherwise it opens
``Settings.slot_channel_limit`` channels and the worker, once it has read
``@concurrent(max=N)``, serves ``min(N, channels)`` slots (1 without the
decorator) and says so in ``ready``; the parent closes the rest.  More than one
slot requires an async run()/predict(), as in Cog.

Error texts
-----------
An exception in run()/predict() fails that prediction only, with
``Prediction failed: <Type>: <message>`` (``Training failed: ...`` in train
mode; one prefix, not coglet's doubled one) and its traceback appended to the
prediction's logs.  Unencodable output: ``Prediction failed: Failed to
serialize output: <reason>`` (the text of :mod:`minicog.encoding`).  Input preparation: ``Input validation error:
<input>: <reason>``.  Setup: ``Failed to load predictor: ...`` or ``Setup
failed: ...``, with the traceback in the setup logs.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import inspect
import os
import queue
import select
import shutil
import signal
import sys
import threading
import time
import traceback
import types
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Optional

from minicog import protocol
# What every prediction uses, imported once: an import statement inside a function costs
# 2-3 us per call on CPython 3.11 even when the module is loaded (the worker ran five
# of them per prediction).  The SDK is loaded anyway (the model imports cog).
from minicog.sdk.exceptions import CancelationException
from minicog.sdk.scope import Scope, set_sync_scope, use_scope

from .inputs import InputError, InputPlan, Prepared, prepare, read_input_message, takes_no_arguments
from .outputs import OutputSender, output_frame

if TYPE_CHECKING:
    import asyncio

__all__ = ["main", "Worker", "WorkerSettings", "describe_exception"]


def _ignore_signal(signum: int, frame: object) -> None:
    """Handler for SIGINT/SIGTERM in the worker: the parent decides when it stops."""


@dataclasses.dataclass
class WorkerSettings:
    """The limits the worker needs, sent by the parent in ``init`` (see :class:`minicog.settings.Settings`)."""

    max_inline_ipc_bytes: int = 6 * 1024 * 1024
    max_log_line_bytes: int = 4 * 1024 * 1024
    log_batch_interval: float = 0.02
    log_batch_chars: int = 256 * 1024
    healthcheck_timeout: float = 5.0
    weights: Optional[str] = None
    user_agent: Optional[str] = None
    download_timeout: float = 10.0
    max_download_bytes: int = 1024 * 1024 * 1024
    cancel_resignal_interval: float = 0.05
    spin_wait: float = 0.0  # the parent's Settings.spin_window()

    @classmethod
    def from_message(cls, values: Optional[dict]) -> "WorkerSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` (just ``Type`` when the message is empty), as Cog renders errors."""
    from minicog.errors import MinicogError

    text = str(exc)
    if isinstance(exc, MinicogError) and text:
        return text
    name = type(exc).__qualname__
    return f"{name}: {text}" if text else name


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _is_internal_frame(filename: str) -> bool:
    """Frames of minicog itself or of the import machinery: noise in a model's traceback."""
    return filename.startswith(("<frozen ", _PACKAGE_DIR)) or os.path.abspath(filename).startswith(_PACKAGE_DIR)


def model_traceback(exc: BaseException) -> str:
    """The traceback of a load/setup failure as the model's author needs it.

    Only the model's own frames are kept (minicog's loader and worker frames and
    ``<frozen importlib>`` say nothing about the bug).  A ``LoadError`` minicog
    raised about an exception from the model's code shows that exception; a
    ``LoadError`` with no such cause (file not found, no such class) shows no
    traceback at all: its one-line message says everything.
    """
    from minicog.errors import LoadError

    if isinstance(exc, LoadError):
        if exc.__cause__ is None:
            return ""
        exc = exc.__cause__
    return _format_chain(exc, set())


def _format_chain(exc: BaseException, seen: set) -> str:
    seen.add(id(exc))
    text = ""
    # Python's own order: the cause (or context) first, then "... during handling ...".
    if exc.__cause__ is not None and id(exc.__cause__) not in seen:
        text = _format_chain(exc.__cause__, seen) + \
            "\nThe above exception was the direct cause of the following exception:\n\n"
    elif exc.__context__ is not None and not exc.__suppress_context__ and id(exc.__context__) not in seen:
        text = _format_chain(exc.__context__, seen) + \
            "\nDuring handling of the above exception, another exception occurred:\n\n"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_internal_frame(f.filename)]
    if frames:
        text += "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    return text + "".join(traceback.format_exception_only(type(exc), exc))


def _timeout_errors() -> tuple[type, ...]:
    """TimeoutError, plus asyncio's own class on 3.10 if the model imported asyncio."""
    aio = sys.modules.get("asyncio")
    return (TimeoutError, aio.TimeoutError) if aio is not None else (TimeoutError,)


class _Job:
    __slots__ = ("id", "slot", "channel", "msg", "tmp_dir", "owner")

    def __init__(self, slot: int, channel: protocol.Channel, msg: dict):
        self.id = str(msg.get("id"))
        self.slot = slot
        self.channel = channel
        self.msg = msg
        self.tmp_dir = msg.get("tmp_dir") or None
        self.owner: Any = None  # its LogOwner, once it runs

    def subdir(self, name: str) -> Optional[str]:
        # Not os.path.join: *name* is a plain word, and this runs twice per prediction.
        return f"{self.tmp_dir}{os.sep}{name}" if self.tmp_dir else None


class Worker:
    def __init__(self, control_fd: int, slot_fds: list[int]):
        for fd in [control_fd, *slot_fds]:
            os.set_inheritable(fd, False)  # children of the model must not hold our channels
        self.control = protocol.Channel(Connection(control_fd), "control")
        self.slots = [protocol.Channel(Connection(fd), f"slot {i}") for i, fd in enumerate(slot_fds)]
        self.num_slots = 0
        # SimpleQueue: put/get in C, the cheapest hand-off from the I/O thread to the main thread.
        self.jobs: "queue.SimpleQueue[Optional[_Job]]" = queue.SimpleQueue()
        self.busy: set[int] = set()
        self.direct = False  # the main thread reads the slot itself (sync models)
        self.poisoned: set[int] = set()
        self.async_tasks: dict[str, asyncio.Task] = {}
        self.loaded: Any = None
        self.specs: list[Any] = []
        self.mode = "predict"
        self.settings = WorkerSettings()
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_lock = threading.Lock()
        self._stderr_fd: Optional[int] = None
        #: The kwargs-free Prepared of a model whose function takes no arguments (after setup).
        self._no_inputs: Any = None
        #: What preparing an input needs to know of run()/predict() (after setup).
        self._input_plan: Optional[InputPlan] = None

    # -- messages to the parent ---------------------------------------------------------

    def _control_send(self, msg: dict) -> None:
        try:
            self.control.send(msg)
        except (OSError, ValueError):
            self._last_words(f"minicog worker: control channel broken, dropping {msg.get('type')} message\n")

    def _control_log(self, source: str, data: str) -> None:
        self._control_send({"type": "log", "source": source, "data": data})

    def worker_log(self, level: str, message: str) -> None:
        self._control_send({"type": "worker_log", "level": level, "message": message})

    def _last_words(self, text: str) -> None:
        fd = self._stderr_fd if self._stderr_fd is not None else 2
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        except OSError:
            pass

    def _exit(self, code: int, reason: Optional[str] = None) -> None:
        if reason:
            self._last_words(f"minicog worker: {reason}\n")
        os._exit(code)

    # -- start-up -----------------------------------------------------------------------

    def run(self) -> int:
        from minicog.sdk import runtime

        runtime._set_active()
        # The parent decides when we stop (shutdown message, or its channel closing).
        # Ctrl-C in a terminal and `timeout`/`docker stop` signal the whole process group;
        # obeying them here would kill predictions the parent is still draining.
        # A no-op handler rather than SIG_IGN: ignored dispositions survive exec, and the
        # model's own child processes must still obey SIGINT/SIGTERM.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _ignore_signal)
        try:
            init = self.control.recv()
        except (EOFError, OSError, protocol.ProtocolError) as exc:
            self._exit(2, f"no init message: {exc}")
        if init.get("type") != "init":
            self._exit(2, f"expected an init message, got {init.get('type')!r}")
        self.settings = WorkerSettings.from_message(init.get("settings"))
        self.mode = init.get("mode") or "predict"
        self._install_capture()
        setup_done = threading.Event()
        watcher = threading.Thread(target=self._watch_during_setup, args=(setup_done,), name="minicog-setup-watch",
                                   daemon=True)
        watcher.start()
        ready = self._setup(init)
        setup_done.set()
        watcher.join()
        if ready is None:
            # setup_failed was sent; give the parent time to read it, then go.
            self._exit(1)
        for i in range(self.num_slots, len(self.slots)):
            self.slots[i].close()
        del self.slots[self.num_slots:]
        self.router.control.flush_lines()  # setup's logs before ready
        # A sync model has one slot, and its main thread reads that slot itself: the
        # I/O thread hand-off (a queue put/get and a thread switch per prediction) goes.
        self.direct = not self.loaded.is_async and len(self.slots) == 1
        self._control_send(ready)
        threading.Thread(target=self._io_guarded, name="minicog-worker-io", daemon=True).start()
        if self.direct:
            self._main_loop_direct(self.slots[0])
        else:
            self._main_loop()
        return 0

    def _watch_during_setup(self, done: threading.Event) -> None:
        """While setup runs, obey ``shutdown`` and notice the parent going away."""
        while not done.is_set():
            if not wait([self.control.conn], 0.1):
                continue
            try:
                msg = self.control.recv()
            except (EOFError, OSError, protocol.ProtocolError):
                self._exit(0, "Control channel closed during setup (parent died?), exiting")
            if msg.get("type") == "shutdown":
                self._control_send({"type": "shutting_down"})
                self._exit(0)
            self.worker_log("warning", f"control message {msg.get('type')!r} during setup ignored")

    def _install_capture(self) -> None:
        from .cancel import CancelGuard
        from .logs import FdCapture, LogRouter, SlotLogWriter, install_exit_flush, install_sys_hook

        self.guard = CancelGuard(resignal_interval=float(self.settings.cancel_resignal_interval))
        self.guard.install()
        s = self.settings
        self.router = LogRouter(self._control_log, s.max_log_line_bytes, critical=self.guard.critical,
                                batch_interval=s.log_batch_interval if s.log_batch_interval > 0 else None,
                                batch_chars=s.log_batch_chars)
        original_out, original_err = sys.stdout, sys.stderr
        for stream in (original_out, original_err):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        self.fd_capture = FdCapture(self.router)
        self._stderr_fd = self.fd_capture.saved_stderr
        self.writers = {
            "stdout": SlotLogWriter(self.router, "stdout", original_out),
            "stderr": SlotLogWriter(self.router, "stderr", original_err),
        }
        sys.stdout = self.writers["stdout"]
        sys.stderr = self.writers["stderr"]
        # The originals write into the capture pipes: text a user stream passes to them
        # would come back through the fd reader, unattributed and (under a tee) twice.
        self._original_streams = (original_out, original_err)
        sys.__stdout__ = self.writers["stdout"]
        sys.__stderr__ = self.writers["stderr"]
        install_sys_hook(self.writers)
        install_exit_flush(self.router)

    def _ensure_loop(self) -> None:
        """Start the event loop thread once: only async models (or async setup/healthcheck)
        need it, and importing asyncio costs a sync model's start-up tens of ms."""
        with self._loop_lock:
            if self.loop is None:
                self._start_loop()

    def _start_loop(self) -> None:
        import asyncio

        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        threading.Thread(target=run, name="minicog-event-loop", daemon=True).start()
        started.wait(10)
        self.loop = loop

    def _run_on_loop(self, coro: Any) -> Any:
        import asyncio

        self._ensure_loop()
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def _setup_failed(self, error: str, exc: Optional[BaseException] = None) -> None:
        if exc is not None:
            text = model_traceback(exc)
            if text:
                self.router.control.write("stderr", text)
        self.router.control.flush_partial()
        self._control_send({"type": "setup_failed", "error": error})

    def _build_schema(self, loaded: Any) -> Optional[dict]:
        """The OpenAPI document for *loaded*, or None (with a warning) if it cannot be built."""
        try:
            from minicog import schema

            doc = schema.build_schema(loaded) if self.mode != "train" else schema.build_schema(None, loaded)
            protocol.dumps({"type": "schema", "schema": doc})  # must be sendable as JSON
            return doc
        except Exception as exc:
            self.worker_log("warning", f"No schema: {describe_exception(exc)}. Inputs are not validated.")
            return None

    def _setup(self, init: dict) -> Optional[dict]:
        """Load and set up the model; the ``ready`` message, or None after ``setup_failed``."""
        try:
            from minicog import compat, loader

            # force: a real ``cog`` imported earlier (a .pth file, sitecustomize) must not
            # reach the model, or its Path/Secret/scope would not be minicog's.
            compat.install(force=True)
            self.loaded = loaded = loader.load_predictor(init["ref"], mode=self.mode)
        except BaseException as exc:  # SystemExit in a model's import is a load failure too
            self._setup_failed(f"Failed to load predictor: {describe_exception(exc)}", exc)
            return None
        # The schema comes from the signatures alone, so it goes out before setup():
        # a caller can reject a typo in the inputs without waiting for a long setup.
        doc = self._build_schema(loaded)
        self._control_send({"type": "schema", "schema": doc})
        if loaded.is_async or inspect.iscoroutinefunction(loaded.healthcheck) \
                or inspect.iscoroutinefunction(loaded.setup):
            # Before setup, so loop-bound objects made in setup belong to the loop that
            # runs the predictions and healthchecks.
            self._ensure_loop()

        requested = init.get("max_concurrency")
        n = int(requested) if requested else int(getattr(loaded, "concurrency_max", None) or 1)
        if n > 1 and not loaded.is_async:
            self._setup_failed("Setup failed: COG_MAX_CONCURRENCY > 1 requires an async run() or predict() method")
            return None
        if n > len(self.slots):
            self.worker_log("warning", f"concurrency {n} capped to the {len(self.slots)} slot channels opened; "
                                       "set COG_MAX_CONCURRENCY to serve more")
            n = len(self.slots)
        self.num_slots = max(1, n)

        try:
            setup = loaded.setup
            if setup is not None:
                kwargs = {}
                try:
                    if "weights" in inspect.signature(setup).parameters:
                        kwargs["weights"] = self.settings.weights
                except (TypeError, ValueError):
                    pass
                if inspect.iscoroutinefunction(setup):
                    self._run_on_loop(setup(**kwargs))
                else:
                    result = setup(**kwargs)
                    if inspect.isawaitable(result):
                        self._run_on_loop(result)
        except BaseException as exc:
            self._setup_failed(f"Setup failed: {describe_exception(exc)}", exc)
            return None

        try:
            from minicog import schema

            self.specs = list(schema.describe_inputs(loaded.fn))
        except Exception as exc:
            self.worker_log("warning", f"Cannot describe the inputs of {loaded.method_name}(): "
                                       f"{describe_exception(exc)}; URL inputs are passed as strings")
            self.specs = []

        if not self.specs and takes_no_arguments(loaded.fn):
            # run()/predict() without parameters: an empty input needs no preparation.
            self._no_inputs = Prepared({}, None)
        self._input_plan = InputPlan(loaded.fn, self.specs)
        self.router.control.flush_partial()
        return {
            "type": "ready",
            "num_slots": self.num_slots,
            "schema": doc,
            "streaming": bool(getattr(loaded, "streaming", False)),
            "is_async": bool(loaded.is_async),
            "has_healthcheck": loaded.healthcheck is not None,
        }

    # -- I/O thread -----------------------------------------------------------------------

    def _io_guarded(self) -> None:
        try:
            self._io_loop()
        except BaseException as exc:  # a bug in minicog: say so, then stop
            reason = f"I/O thread crashed: {describe_exception(exc)}"
            self._control_send({"type": "fatal", "reason": reason})
            self._exit(3, reason + "\n" + traceback.format_exc())

    def _io_loop(self) -> None:
        conns: dict[Any, int] = {self.control.conn: -1}
        for i, chan in enumerate(self.slots):
            if not self.direct:  # direct: the main thread reads the slot itself
                conns[chan.conn] = i
        # One poll object for the worker's life: multiprocessing's wait() builds a
        # selector and registers every channel on each call.
        poller = select.poll()
        by_fd: dict[int, Any] = {}
        for conn in conns:
            by_fd[conn.fileno()] = conn
            poller.register(conn.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            ready = [by_fd[fd] for fd, _ in poller.poll() if fd in by_fd]
            # Slots before control: the parent sends a cancel only after the prediction's
            # request, so when both are waiting the request must be read first.
            for conn in sorted(ready, key=lambda c: conns[c] < 0):
                index = conns[conn]
                try:
                    msg = protocol.recv(conn)
                except (EOFError, OSError, protocol.ProtocolError) as exc:
                    if index < 0:
                        self._exit(0, "Control channel closed (parent died?), exiting")
                    del conns[conn]
                    fd = conn.fileno()
                    poller.unregister(fd)
                    del by_fd[fd]
                    self.poisoned.add(index)
                    self.worker_log("error", f"slot {index} poisoned: {describe_exception(exc)}")
                    if len(self.poisoned) >= len(self.slots):
                        self._exit(1, "All slots poisoned, exiting")
                    continue
                if index < 0:
                    self._on_control(msg)
                else:
                    self._on_slot(index, msg)

    def _on_control(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "cancel":
            self._cancel(str(msg.get("id")))
        elif kind == "healthcheck":
            threading.Thread(target=self._healthcheck, args=(msg.get("id"),), name="minicog-healthcheck", daemon=True).start()
        elif kind == "shutdown":
            self._control_send({"type": "shutting_down"})
            self._exit(0)
        else:
            self.worker_log("warning", f"unexpected control message {kind!r} ignored")

    def _on_slot(self, index: int, msg: dict) -> None:
        if msg["type"] == "cancel":
            self._cancel(str(msg.get("id")))  # the slot's copy of a cancel (see _main_loop_direct)
            return
        if msg["type"] != "predict":
            self.worker_log("warning", f"unexpected message {msg['type']!r} on slot {index} ignored")
            return
        if index in self.busy:
            self.worker_log("warning", f"predict on busy slot {index} ignored")
            return
        self.busy.add(index)
        job = _Job(index, self.slots[index], msg)
        self.guard.register(job.id)
        if self.loaded.is_async:
            import asyncio

            assert self.loop is not None
            asyncio.run_coroutine_threadsafe(self._run_async(job), self.loop)
        else:
            self.jobs.put(job)

    def _cancel(self, prediction_id: str) -> None:
        if not self.guard.request(prediction_id):
            return  # stale: it ended already (see .cancel)
        if self.loaded is not None and self.loaded.is_async and self.loop is not None:
            def cancel() -> None:
                task = self.async_tasks.get(prediction_id)
                if task is not None:
                    task.cancel()
            self.loop.call_soon_threadsafe(cancel)

    # -- healthcheck ------------------------------------------------------------------------

    def _healthcheck(self, hc_id: Any) -> None:
        timeout = float(self.settings.healthcheck_timeout)
        hc = self.loaded.healthcheck if self.loaded is not None else None
        status, error = "healthy", None
        try:
            if hc is None:
                result: Any = True
            elif inspect.iscoroutinefunction(hc):
                import asyncio
                import concurrent.futures

                self._ensure_loop()
                assert self.loop is not None
                fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(hc(), timeout), self.loop)
                try:
                    result = fut.result(timeout + 1.0)
                except (asyncio.TimeoutError, concurrent.futures.TimeoutError, TimeoutError):
                    fut.cancel()
                    raise TimeoutError() from None
            else:
                box: dict[str, Any] = {}

                def call() -> None:
                    try:
                        box["result"] = hc()
                    except BaseException as exc:
                        box["error"] = exc

                t = threading.Thread(target=call, name="minicog-user-healthcheck", daemon=True)
                t.start()
                t.join(timeout)
                if t.is_alive():
                    raise TimeoutError()
                if "error" in box:
                    raise box["error"]
                result = box.get("result")
            if result is False:
                status, error = "unhealthy", "Healthcheck failed: user-defined healthcheck returned False"
        except _timeout_errors():
            status, error = "unhealthy", f"Healthcheck failed: user-defined healthcheck timed out after {timeout} seconds"
        except BaseException as exc:
            status, error = "unhealthy", f"Healthcheck failed: {describe_exception(exc)}"
        self._control_send({"type": "healthcheck_result", "id": hc_id, "status": status, "error": error})

    # -- predictions: common parts ------------------------------------------------------------

    def _slot_log(self, channel: protocol.Channel, source: str, data: str) -> None:
        try:
            channel.send({"type": "log", "source": source, "data": data})
        except (OSError, ValueError):
            pass  # the slot is broken; the terminal send will notice and poison it

    def _begin(self, job: _Job) -> tuple[Any, Any]:
        channel = job.channel
        owner = self.router.open(lambda source, data: self._slot_log(channel, source, data), job.id)

        def emit(name: str, value: Any, mode: str) -> None:
            # Called from user code: critical throughout, locks included (see .cancel).
            with self.guard.critical():
                owner.flush_lines()  # lines printed before the metric arrive before it
                channel.send({"type": "metric", "name": name, "value": value, "mode": mode})

        context = job.msg.get("context") or {}
        scope = Scope({str(k): str(v) for k, v in context.items()}, emit)
        job.owner = owner
        return owner, scope

    def _prefix(self) -> str:
        return "Training failed" if self.mode == "train" else "Prediction failed"

    def _failure(self, owner: Any, exc: BaseException) -> dict:
        """The ``failed`` outcome for *exc*; user exceptions get their traceback logged."""
        from minicog.errors import OutputError

        if isinstance(exc, InputError):
            return {"type": "failed", "error": f"Input validation error: {exc}"}
        if isinstance(exc, OutputError):
            return {"type": "failed", "error": f"{self._prefix()}: {exc}"}
        tb = exc.__traceback__
        # Drop the worker's own frame so the traceback starts in the model's code.
        if tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__ and tb.tb_next is not None:
            tb = tb.tb_next
        owner.write("stderr", "".join(traceback.format_exception(type(exc), exc, tb)))
        return {"type": "failed", "error": f"{self._prefix()}: {describe_exception(exc)}"}

    def _finish(self, job: _Job, owner: Any, scope: Any, outcome: dict, *, inputs_removed: bool = False,
                folder_unused: bool = False, kept: Optional[bytes] = None) -> None:
        """Flush logs, clean inputs, send the terminal message, free the slot.

        *inputs_removed*: the prediction's :class:`~.inputs.Prepared` was cleaned up
        already, which removed its inputs folder (one stat fewer per prediction).
        *folder_unused*: nothing made the prediction's folder; the terminal message
        says so (``tmp: false``) and the parent skips removing it.  *kept*: the JSON
        of a single output kept back (``OutputSender.keep_single``); it rides in a
        ``done`` message, or goes as its ``output`` message before any other end.
        """
        scope.close()
        for stream in self._original_streams:
            try:
                if stream is not None:
                    stream.flush()  # binary writes through sys.stdout.buffer
            except (OSError, ValueError):
                pass
        self.fd_capture.drain()
        self.router.close(owner)
        inputs = None if inputs_removed else job.subdir("inputs")
        if inputs and os.path.isdir(inputs):  # usually never created: a stat, not an rmtree
            shutil.rmtree(inputs, ignore_errors=True)
        if self.guard.forget(job.id):  # a cancel was asked for: it wins over any other end
            outcome = {"type": "canceled"}
        self.busy.discard(job.slot)
        try:
            if outcome["type"] == "done":
                job.channel.send_raw(protocol.done_message(job.id, outcome["is_stream"], tmp=not folder_unused,
                                                           output=kept))
                job.channel.release()  # what a sync prediction held since its model returned
                return
            outcome["id"] = job.id
            if folder_unused:
                outcome["tmp"] = False
            if kept is None:
                job.channel.send(outcome)
            else:  # canceled (or failed) after the model returned: its output still goes first
                job.channel.send_raw(output_frame(0, kept))
                job.channel.send(outcome)
            job.channel.release()  # what a sync prediction held since its model returned
        except (OSError, ValueError) as exc:
            self.worker_log("error", f"slot {job.slot} poisoned: cannot send the result of {job.id}: {exc}")
            self.poisoned.add(job.slot)

    def _prepare(self, job: _Job) -> Any:
        msg = job.msg
        if self._no_inputs is not None and not msg.get("input") and not msg.get("input_file") \
                and not msg.get("input_files"):
            return self._no_inputs  # shared: nothing in it to change or clean up
        raw = read_input_message(job.msg)
        s = self.settings
        return prepare(self.loaded.fn, raw, self.specs, job.subdir("inputs"),
                       timeout=s.download_timeout, max_bytes=s.max_download_bytes, user_agent=s.user_agent,
                       local_files=job.msg.get("input_files"), critical=self.guard.critical,
                       plan=self._input_plan)

    def _sender(self, job: _Job) -> Any:
        flush = job.owner.flush_lines if job.owner is not None else None
        return OutputSender(job.channel, job.subdir("outputs"), self.settings.max_inline_ipc_bytes, before_send=flush)

    # -- sync predictions (main thread) -----------------------------------------------------

    def _main_loop_direct(self, chan: protocol.Channel) -> None:
        """Sync predictions read from the one slot by the main thread that runs them.

        The parent sends each cancel on the control channel (read by the I/O thread,
        which interrupts a running prediction) and, the first time, a copy on the slot
        channel right after the request.  A control cancel that the I/O thread reads
        before this thread registered the prediction is dropped as unknown; its slot
        copy is then already queued behind the request, so it is read here before the
        prediction starts.  A copy read for a prediction that ended is stale: ignored.
        """
        # A poll object made once: Connection.poll() builds a selector on every call.
        pending = select.poll()
        pending.register(chan.fileno(), select.POLLIN)
        spin = self.settings.spin_wait
        quick = True  # requests come back to back: spin for the next one
        backlog: collections.deque = collections.deque()  # read, not handled yet
        while True:
            try:
                if not backlog:
                    idle_since = time.perf_counter()
                    if spin > 0 and quick:
                        # The next request of a busy client usually follows within the window:
                        # found running, this thread costs the parent no wake-up (protocol.spin_poll).
                        protocol.spin_poll(pending, spin)
                    backlog.extend(protocol.recv_available(chan.conn))  # one read for the request
                    if spin > 0:
                        # Twice the window: a gap measured without spinning includes the
                        # wake-ups the spin saves, and must not keep it off for good.
                        quick = time.perf_counter() - idle_since <= 2 * spin
                msg = backlog.popleft()
            except (EOFError, OSError, protocol.ProtocolError) as exc:
                self.worker_log("error", f"slot 0 poisoned: {describe_exception(exc)}")
                self._exit(1, "All slots poisoned, exiting")
            kind = msg.get("type")
            if kind == "cancel":
                self._cancel(str(msg.get("id")))
                continue
            if kind != "predict":
                self.worker_log("warning", f"unexpected message {kind!r} on slot 0 ignored")
                continue
            job = _Job(0, chan, msg)
            self.busy.add(0)
            self.guard.register(job.id)
            try:
                while backlog or pending.poll(0):  # a cancel copy already behind the request
                    if not backlog:
                        backlog.extend(protocol.recv_available(chan.conn))
                    early = backlog.popleft()
                    if early.get("type") == "cancel":
                        self._cancel(str(early.get("id")))
                    else:
                        self.worker_log("warning", f"unexpected message {early.get('type')!r} on busy slot 0 ignored")
            except (EOFError, OSError, protocol.ProtocolError):
                pass  # the next read reports it
            self._run_sync_or_exit(job)

    def _main_loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            self._run_sync_or_exit(job)

    def _run_sync_or_exit(self, job: _Job) -> None:
        """Run *job*; a failure of minicog's own bookkeeping (not the model's) ends the worker."""
        try:
            self._run_sync(job)
        except BaseException as exc:
            reason = f"prediction bookkeeping failed: {describe_exception(exc)}"
            self._control_send({"type": "fatal", "reason": reason})
            self._exit(3, reason + "\n" + traceback.format_exc())

    def _run_sync(self, job: _Job) -> None:
        guard = self.guard
        owner, scope = self._begin(job)
        self.router.set_sync_owner(owner)
        set_sync_scope(scope)
        prepared = None
        sender = self._sender(job)
        try:
            with use_scope(scope):
                with guard.cancelable(job.id):
                    prepared = self._prepare(job)
                    result = self.loaded.fn(**prepared.kwargs)
                if isinstance(result, types.GeneratorType):
                    self._iterate_sync(job, result, sender)
                    is_stream = True
                elif isinstance(result, (list, tuple)):
                    job.channel.hold()  # released with the terminal message (_finish)
                    for item in result:
                        sender.send(item)
                    is_stream = True
                else:
                    job.channel.hold()  # released with the terminal message (_finish)
                    if result is not None:
                        sender.keep_single = True  # into the done message, if inline
                        sender.send(result)
                    is_stream = False
            outcome = {"type": "done", "is_stream": is_stream}
        except CancelationException:
            outcome = {"type": "canceled"}
        except BaseException as exc:
            outcome = self._failure(owner, exc)
        finally:
            set_sync_scope(None)
            self.router.set_sync_owner(None)
            if prepared is not None:
                prepared.cleanup()
        # Known unused only when the inputs were prepared without a download (a failed
        # preparation may have made the folder) and the input was not spilled.
        unused = (prepared is not None and prepared.inputs_dir is None and not sender.made_dir
                  and not job.msg.get("input_file"))
        self._finish(job, owner, scope, outcome, inputs_removed=prepared is not None, folder_unused=unused,
                     kept=sender.take_kept())

    def _iterate_sync(self, job: _Job, gen: Any, sender: Any) -> None:
        thrown = False
        first = True
        try:
            while True:
                with self.guard.cancelable(job.id, check=False):
                    try:
                        if not thrown and self.guard.was_requested(job.id):
                            # Canceled while we were sending the previous item: raise it where
                            # the model can see it (its ``except CancelationException``).
                            thrown = True
                            self.guard.taken(job.id)
                            item = gen.throw(CancelationException())
                        else:
                            item = next(gen)
                    except StopIteration:
                        return
                sender.send(item)
                if first:
                    # The first token is out: a parent thread waiting for this CPU (to
                    # write that token to its client) gets it before the rest floods in.
                    first = False
                    os.sched_yield()
        finally:
            try:
                gen.close()
            except BaseException:
                pass

    # -- async predictions (event loop thread) ------------------------------------------------

    async def _run_async(self, job: _Job) -> None:
        import asyncio

        owner, scope = self._begin(job)
        sender = self._sender(job)
        self.router.set_context_owner(owner)  # this task's context; inherited by the inner task
        box: dict[str, Any] = {}
        loop = asyncio.get_running_loop()

        async def user_part() -> bool:
            box["prepared"] = prepared = await loop.run_in_executor(None, self._prepare, job)
            result = self.loaded.fn(**prepared.kwargs)
            if inspect.isasyncgen(result):
                async for item in result:
                    sender.send(item)
                return True
            if inspect.isawaitable(result):
                result = await result
            if inspect.isasyncgen(result):
                async for item in result:
                    sender.send(item)
                return True
            if inspect.isgenerator(result) or isinstance(result, (list, tuple)):
                for item in result:
                    sender.send(item)
                return True
            if result is not None:
                sender.send(result)
            return False

        try:
            with use_scope(scope):
                task = asyncio.ensure_future(user_part())
            self.async_tasks[job.id] = task
            if self.guard.was_requested(job.id):
                task.cancel()
            try:
                is_stream = await task
                outcome = {"type": "done", "is_stream": is_stream}
            except asyncio.CancelledError:
                outcome = {"type": "canceled"}
            except BaseException as exc:
                outcome = self._failure(owner, exc)
        finally:
            self.async_tasks.pop(job.id, None)
            prepared = box.get("prepared")
            if prepared is not None:
                prepared.cleanup()
        self._finish(job, owner, scope, outcome, inputs_removed=prepared is not None)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minicog.worker", description="minicog worker (started by the server)")
    parser.add_argument("--control", type=int, required=True, help="file descriptor of the control channel")
    parser.add_argument("--slots", default="", help="comma-separated file descriptors of the slot channels")
    args = parser.parse_args(argv)
    slot_fds = [int(x) for x in args.slots.split(",") if x.strip()]
    return Worker(args.control, slot_fds).run()
