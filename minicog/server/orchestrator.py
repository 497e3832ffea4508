"""The parent side of the worker: spawn it, watch it, dispatch predictions to slots.

One :class:`Orchestrator` owns one worker subprocess at a time (a *generation*).
It spawns ``sys.executable -m minicog.worker`` (never a fork of the server),
passing it one control channel and the slot channels as inherited file
descriptors (:func:`multiprocessing.connection.Pipe` socketpairs), sends
``init``, collects setup output, and waits in the background for ``ready``
(see :mod:`minicog.protocol` for the messages).

Threads
    Each generation has one I/O thread that waits on the control channel, every
    slot channel, a wake-up pipe and the process itself (a Linux pidfd when
    available, else a short poll), and enforces the deadlines: setup timeout,
    cancel grace periods, healthcheck answers.  Listener methods are called on
    that thread, in order, and must not block.  ``submit``/``cancel``/
    ``healthcheck``/``stop`` are called from any thread; they send on the
    channels directly (each channel has its own lock, and blocking sends give
    backpressure).

Slots
    A slot is free again *before* the listener's terminal method runs, so a
    caller that waited for its answer can always submit the next prediction
    (coglet frees slots on a separate ``idle`` message and answers 409 in
    between).  The slot count comes from ``Settings.max_concurrency``
    (COG_MAX_CONCURRENCY), else the ``max_concurrency`` argument (cog.yaml
    ``concurrency.max`` or an embedder's choice), else ``@concurrent`` as read
    by the worker (it reports the count in ``ready``; the parent pre-opens
    ``Settings.slot_channel_limit`` channels in that case), else 1.

Temporary files
    Every prediction gets a folder under one per-orchestrator root
    (``Settings.tmp_dir`` or the system temp dir; the folder itself is created
    lazily by the first writer, so a prediction without files costs no
    filesystem work) with ``inputs/`` (URL
    downloads, input spill; removed by the worker when the prediction ends) and
    ``outputs/`` (file outputs written by the worker, output spills).  File
    outputs are handed to the listener as paths, and the HTTP layer may need
    them after the terminal call (uploads, data URIs), so the folder is removed
    only by :meth:`Orchestrator.release` — the listener's owner calls it when it
    is done with the files — or, for whatever is left, by :meth:`stop`.

Cancels
    :meth:`Orchestrator.cancel` knows only predictions in flight (from
    :meth:`submit` to the terminal call); it returns False for any other id and
    remembers nothing, unlike coglet, which queues up to 1000 cancels for ids it
    has not seen yet.  Such a queue would let a stale cancel (for a finished
    prediction, or a submit that was refused with 409) cancel a later prediction
    reusing the id.  The one window where a caller knows an id the orchestrator
    does not - the HTTP service registers its record just before calling
    :meth:`submit` - is closed by the caller: the service checks after
    :meth:`submit` whether a cancel came in meanwhile (see
    :meth:`minicog.server.service.Service.create`).  A cancel that arrives after
    ``submit`` registered the flight but before its request is on the slot
    channel is sent right after the request, never before it (the worker drops
    cancels for predictions it does not know).

Failures
    * ``setup_failed``, a worker death during setup, or the setup timeout →
      ``SETUP_FAILED`` (not retried: the model's code will fail the same way).
    * A worker that dies while ready (``os._exit``, a signal, the OOM killer):
      every in-flight prediction fails with ``Worker crashed: exit code N`` /
      ``Worker crashed: killed by signal SIGKILL``, and a new worker is spawned
      and set up (``STARTING``).  More than ``Settings.max_worker_restarts``
      deaths within ``Settings.worker_restart_window`` seconds → ``DEFUNCT``.
    * A prediction still running ``Settings.cancel_grace_period`` seconds after
      its cancel: the worker is killed (SIGKILL) and respawned; the canceled
      predictions end ``canceled``, the others running alongside fail with
      ``Worker restarted: ...`` naming the prediction that ignored its cancel.
      Such deliberate restarts do not count towards ``DEFUNCT``.
    * Once cancel was requested, a prediction ends ``canceled`` even if it
      returns normally (coglet's behaviour).
    Every worker process is reaped; none is left a zombie.
"""

from __future__ import annotations

import collections
import datetime
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Pipe
from typing import Any, Callable, Optional

from minicog import errors, protocol
from minicog.settings import Settings

__all__ = ["Orchestrator", "SetupInfo", "STATES"]

log = logging.getLogger("minicog.orchestrator")
worker_log = logging.getLogger("minicog.worker")

STATES = ("STARTING", "READY", "SETUP_FAILED", "DEFUNCT", "STOPPED")

# How often the I/O thread checks the process when no pidfd is available.
_POLL_INTERVAL = 0.5
# Seconds to wait for a process whose control channel closed to finish exiting.
_EXIT_WAIT = 5.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class SetupInfo:
    """What /health-check reports under ``setup`` for the current worker's setup.

    ``started_at``/``completed_at`` are aware UTC datetimes (None until known);
    ``status`` is ``"starting"``, ``"succeeded"`` or ``"failed"``; ``logs`` is the
    setup output (the model's prints and tracebacks, and minicog's worker
    messages as ``[minicog] ...`` lines); ``entries`` keeps each chunk as
    ``(timestamp, source, text)``; ``error`` says why setup failed.
    """

    def __init__(self) -> None:
        self.started_at: Optional[datetime.datetime] = None
        self.completed_at: Optional[datetime.datetime] = None
        self.status = "starting"
        self.error: Optional[str] = None
        self.entries: list[tuple[datetime.datetime, str, str]] = []
        self._lock = threading.Lock()

    def add(self, source: str, text: str) -> None:
        with self._lock:
            self.entries.append((_now(), source, text))

    @property
    def logs(self) -> str:
        with self._lock:
            parts = [text for _, _, text in self.entries]
        out = "".join(parts)
        if self.error and self.status == "failed":
            if out and not out.endswith("\n"):
                out += "\n"
            out += self.error + "\n"
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "completed_at": self.completed_at, "status": self.status,
                "logs": self.logs, "error": self.error}


class _Flight:
    """One prediction in flight."""

    __slots__ = ("id", "slot", "listener", "gen", "cancel_requested", "cancel_deadline", "error", "sent")

    def __init__(self, prediction_id: str, slot: int, listener: Any, gen: "_Generation"):
        self.id = prediction_id
        self.slot = slot
        self.listener = listener
        self.gen = gen
        self.cancel_requested = False
        self.cancel_deadline: Optional[float] = None
        self.error: Optional[str] = None  # a parent-side problem that turns "done" into "failed"
        self.sent = False  # the predict request is on its slot channel (cancels may follow it)


class _Healthcheck:
    __slots__ = ("id", "event", "result", "deadline")

    def __init__(self, hc_id: str, deadline: float):
        self.id = hc_id
        self.event = threading.Event()
        self.result: Optional[tuple[bool, Optional[str]]] = None
        self.deadline = deadline


class _Generation:
    """One worker process and its channels."""

    def __init__(self, number: int):
        self.number = number
        self.popen: Optional[subprocess.Popen] = None
        self.control: Optional[protocol.Channel] = None
        self.slots: list[Optional[protocol.Channel]] = []
        self.pidfd: Optional[int] = None
        self.wake_r: Any = None
        self.wake_w: Any = None
        self.thread: Optional[threading.Thread] = None
        self.ready = False
        self.setup_deadline: Optional[float] = None
        self.kill_reason: Optional[str] = None  # set when we kill it on purpose
        self.fatal: Optional[str] = None
        self.exited = False
        self.rebuild = False  # the I/O thread must re-read the channel list

    def wake(self) -> None:
        try:
            self.wake_w.send_bytes(b"")
        except (OSError, ValueError, AttributeError):
            pass


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "unknown exit status"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _safe_name(prediction_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", prediction_id)[:64] or "prediction"


def _call(listener: Any, method: str, *args: Any) -> None:
    """Call a listener method; a listener bug is logged, never fatal to the I/O thread."""
    fn = getattr(listener, method, None)
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("prediction listener %s() raised", method)


class Orchestrator:
    """Runs one model in a worker subprocess; see the module docstring.

    Public attributes: ``state``, ``setup`` (:class:`SetupInfo`), ``schema``,
    ``num_slots``, ``free_slots``, ``streaming``, ``is_async``, ``has_healthcheck``,
    ``pid`` (the worker's, or None).
    """

    def __init__(self, ref: str, *, mode: str = "predict", settings: Optional[Settings] = None,
                 max_concurrency: Optional[int] = None, cwd: Optional[str] = None,
                 env: Optional[dict[str, str]] = None):
        if mode not in ("predict", "train"):
            raise ValueError(f"mode must be 'predict' or 'train', not {mode!r}")
        self.ref = ref
        self.mode = mode
        self.settings = settings if settings is not None else Settings.from_env()
        self.max_concurrency = max_concurrency
        self.cwd = os.path.abspath(cwd) if cwd else os.getcwd()
        self.env = dict(env) if env is not None else None

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.state = "STARTING"
        self.setup = SetupInfo()
        self.schema: Optional[dict] = None
        self.streaming = False
        self.is_async = False
        self.has_healthcheck = False
        self.num_slots = 0
        self._free: list[int] = []
        self._flights: dict[str, _Flight] = {}
        # id -> [(listener, folder)]: a finished run's files may still be in use when a
        # new run reuses its id, so each run's folder is released on its own.
        self._dirs: dict[str, list[tuple[Any, str]]] = {}
        self._gen: Optional[_Generation] = None
        self._generations = 0
        self._deaths: collections.deque[float] = collections.deque()
        self._hc: Optional[_Healthcheck] = None
        self._hc_counter = 0
        self._tmp_root: Optional[str] = None
        self._dir_counter = 0
        self._started = False

    # -- public properties ----------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        with self._lock:
            return len(self._free) if self.state == "READY" else 0

    @property
    def pid(self) -> Optional[int]:
        gen = self._gen
        return gen.popen.pid if gen is not None and gen.popen is not None and not gen.exited else None

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._started

    def in_flight(self) -> list[str]:
        """Ids of the predictions currently dispatched."""
        with self._lock:
            return list(self._flights)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the worker and return at once; setup continues in the background."""
        with self._lock:
            if self._started:
                raise RuntimeError("Orchestrator.start() called twice")
            self._started = True
            base = self.settings.tmp_dir or None
            if base:
                os.makedirs(base, exist_ok=True)
            self._tmp_root = tempfile.mkdtemp(prefix="minicog-", dir=base)
            self._spawn()

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until the state is not STARTING; True if it is READY."""
        with self._cond:
            self._cond.wait_for(lambda: self.state != "STARTING", timeout)
            return self.state == "READY"

    def wait_state(self, predicate: Callable[[str], bool], timeout: Optional[float] = None) -> str:
        """Wait until ``predicate(state)`` holds (or the timeout); return the state."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self.state), timeout)
            return self.state

    def stop(self, timeout: Optional[float] = None) -> None:
        """Send shutdown, kill after *timeout* (``Settings.worker_stop_timeout``), reap.

        Predictions still in flight fail with ``Worker stopped`` (their listeners are
        called on this thread).  Idempotent.
        """
        timeout = self.settings.worker_stop_timeout if timeout is None else timeout
        with self._cond:
            if self.state == "STOPPED":
                return
            self._set_state("STOPPED")
            gen = self._gen
            flights = list(self._flights.values())
            self._flights.clear()
            self._free = []
            hc, self._hc = self._hc, None
        if hc is not None:
            hc.result = (False, "Healthcheck error: worker stopped")
            hc.event.set()
        if gen is not None:
            self._shutdown_generation(gen, timeout)
        for flight in flights:
            _call(flight.listener, "failed", "Worker stopped: the server is shutting down")
        if self._tmp_root:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
        with self._lock:
            self._dirs.clear()

    def __enter__(self) -> "Orchestrator":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- predictions -----------------------------------------------------------------------

    def submit(self, prediction_id: str, input: dict, listener: Any, *, context: Optional[dict] = None,
               input_files: Optional[list] = None) -> None:
        """Dispatch a prediction to a free slot.

        ``listener.started()`` is called by this method before the request is sent;
        every later call comes from the I/O thread.  Raises
        :class:`~minicog.errors.ServiceUnavailable` unless READY,
        :class:`~minicog.errors.AtCapacity` if every slot is busy, and
        :class:`~minicog.errors.RequestError` if *prediction_id* is already in
        flight or *input* is not JSON.  *input_files* (``[[name, index or None, path]]``)
        are file inputs already decoded by the parent (:mod:`.spool`): the worker uses
        those paths instead of fetching the values.
        """
        prediction_id = str(prediction_id)
        try:
            data = json.dumps(input if input is not None else {}, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise errors.RequestError(f"input is not JSON: {exc}") from None
        with self._lock:
            self._check_ready()
            if prediction_id in self._flights:
                raise errors.RequestError(f"a prediction with id {prediction_id!r} is already running")
            if not self._free:
                raise errors.AtCapacity()
            gen = self._gen
            assert gen is not None
            slot = self._free.pop(0)
            flight = _Flight(prediction_id, slot, listener, gen)
            self._flights[prediction_id] = flight
        try:
            tmp = self._make_dir(prediction_id, listener)
            msg: dict[str, Any] = {"type": "predict", "id": prediction_id, "context": dict(context or {}), "tmp_dir": tmp}
            if input_files:
                msg["input_files"] = input_files
            if len(data) > self.settings.max_inline_ipc_bytes:
                os.makedirs(os.path.join(tmp, "inputs"), exist_ok=True)
                spill = os.path.join(tmp, "inputs", "input.json")
                with open(spill, "wb") as f:
                    f.write(data)
                msg["input_file"] = spill
                frame = protocol.dumps(msg)
            else:
                frame = protocol.dumps(msg)[:-1] + b',"input":' + data + b"}"
        except OSError as exc:
            with self._lock:
                self._flights.pop(prediction_id, None)
                if self._gen is gen and self.state == "READY":
                    self._free.insert(0, slot)
            self.release(prediction_id, listener)
            raise errors.WorkerError(f"cannot prepare the prediction's temporary folder: {exc}") from None
        _call(listener, "started")
        channel = gen.slots[slot] if slot < len(gen.slots) else None
        try:
            if channel is None:
                raise BrokenPipeError("slot channel closed")
            channel.send_raw(frame)
        except (OSError, ValueError) as exc:
            # The slot is poisoned (never reused); the worker's death, if that is the
            # cause, is handled by the I/O thread.
            with self._lock:
                mine = self._flights.get(prediction_id) is flight
                if mine:
                    del self._flights[prediction_id]
            if mine:
                log.error("slot %d poisoned: cannot send prediction %s: %s", slot, prediction_id, exc)
                _call(listener, "failed", f"Failed to send request: {exc}")
        else:
            with self._lock:
                flight.sent = True
                canceled = flight.cancel_requested
            if canceled:
                self._send_cancel(flight)  # cancel() ran before the request was out

    def cancel(self, prediction_id: str) -> bool:
        """Ask the worker to cancel a prediction; False if it is not in flight.

        If it is still running ``Settings.cancel_grace_period`` seconds later, the
        worker is killed and respawned.
        """
        with self._lock:
            flight = self._flights.get(str(prediction_id))
            if flight is None:
                return False
            gen = flight.gen
            first = not flight.cancel_requested
            if first:
                flight.cancel_requested = True
                flight.cancel_deadline = time.monotonic() + self.settings.cancel_grace_period
            # Until its request is on the slot channel, submit() sends the cancel after it.
            sent = flight.sent
        if first:
            gen.wake()
        if sent:
            self._send_cancel(flight)
        return True

    def _send_cancel(self, flight: _Flight) -> None:
        gen = flight.gen
        try:
            if gen.control is not None:
                gen.control.send({"type": "cancel", "id": flight.id})
        except (OSError, ValueError):
            pass  # the worker is gone; the I/O thread ends the prediction

    def release(self, prediction_id: str, listener: Any = None) -> None:
        """Remove a prediction's temporary folder (call when done with its file outputs).

        With *listener* (the one given to :meth:`submit`), only that run's folder goes:
        an id can be reused while an earlier run's files are still being sent, and
        that run's release must not delete the new run's files.  Without it, every
        folder made for the id goes.  Safe to call more than once, and for ids that
        never had a folder.
        """
        prediction_id = str(prediction_id)
        with self._lock:
            runs = self._dirs.pop(prediction_id, [])
            if listener is not None:
                keep = [run for run in runs if run[0] is not listener]
                if keep:
                    self._dirs[prediction_id] = keep
                runs = [run for run in runs if run[0] is listener]
        for _, path in runs:
            shutil.rmtree(path, ignore_errors=True)

    def healthcheck(self) -> tuple[bool, Optional[str]]:
        """Run the model's healthcheck in the worker: ``(healthy, error)``.

        Concurrent callers share one check.  Only meaningful when READY; otherwise
        ``(False, "Healthcheck error: ...")``.  Never blocks predictions or cancels:
        the worker runs it on its own thread (or as a task on its event loop).
        """
        with self._lock:
            if self.state != "READY":
                return False, f"Healthcheck error: worker is {self.state}"
            hc = self._hc
            gen = self._gen
            send = hc is None
            if send:
                self._hc_counter += 1
                hc = self._hc = _Healthcheck(f"hc_{self._hc_counter}", time.monotonic() + self.settings.healthcheck_parent_timeout)
        assert hc is not None and gen is not None
        if send:
            gen.wake()
            try:
                assert gen.control is not None
                gen.control.send({"type": "healthcheck", "id": hc.id})
            except (OSError, ValueError, AssertionError) as exc:
                self._finish_healthcheck(hc, (False, f"Healthcheck error: {exc}"))
        hc.event.wait(self.settings.healthcheck_parent_timeout + 1.0)
        return hc.result if hc.result is not None else (False, "healthcheck timed out")

    # -- internals: state -------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        """(lock held)"""
        if state != self.state:
            log.info("worker state %s -> %s", self.state, state)
            self.state = state
            self._cond.notify_all()

    def _check_ready(self) -> None:
        """(lock held) Raise ServiceUnavailable unless READY."""
        if self.state == "READY":
            return
        if self.state == "STARTING":
            raise errors.ServiceUnavailable()
        if self.state == "SETUP_FAILED":
            raise errors.ServiceUnavailable(f"Setup failed, so the model cannot run predictions: {self.setup.error}. "
                                            "GET /health-check for the setup logs.")
        if self.state == "DEFUNCT":
            raise errors.ServiceUnavailable("The model worker kept crashing and is no longer restarted (DEFUNCT); "
                                            "see the server log.")
        raise errors.ServiceUnavailable("The server is shutting down.")

    def _make_dir(self, prediction_id: str, listener: Any) -> str:
        """The prediction's folder: named here, created only by whoever first writes into it.

        Most predictions never write a file, and creating and removing a folder per
        request cost a tenth of a null prediction's time.  Names are unique (a
        counter) inside the orchestrator's private ``mkdtemp`` root, so nobody else
        can have made them; the worker uses ``os.makedirs(..., exist_ok=True)``.
        """
        assert self._tmp_root is not None
        with self._lock:
            self._dir_counter += 1
            path = os.path.join(self._tmp_root, f"{_safe_name(prediction_id)}-{self._dir_counter}")
            self._dirs.setdefault(prediction_id, []).append((listener, path))
        return path

    def _finish_healthcheck(self, hc: _Healthcheck, result: tuple[bool, Optional[str]]) -> None:
        with self._lock:
            if self._hc is hc:
                self._hc = None
        if hc.result is None:
            hc.result = result
        hc.event.set()

    # -- internals: spawning -------------------------------------------------------------------

    def _planned_slots(self) -> tuple[int, Optional[int]]:
        """(channels to open, max_concurrency to send): see "Slots" in the module docstring."""
        requested = self.settings.max_concurrency or self.max_concurrency
        if requested:
            return int(requested), int(requested)
        return max(1, int(self.settings.slot_channel_limit)), None

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        # The worker must import this very minicog, installed or not.
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        parts = [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_parent]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        return env

    def _worker_settings(self) -> dict[str, Any]:
        s = self.settings
        return {
            "max_inline_ipc_bytes": s.max_inline_ipc_bytes,
            "max_log_line_bytes": s.max_log_line_bytes,
            "log_batch_interval": s.log_batch_interval,
            "log_batch_chars": s.log_batch_chars,
            "healthcheck_timeout": s.healthcheck_timeout,
            "weights": s.weights,
            "user_agent": s.user_agent,
            "download_timeout": s.download_timeout,
            "max_download_bytes": s.max_download_bytes,
        }

    def _spawn(self) -> None:
        """(lock held) Start a new generation: channels, process, init, I/O thread."""
        self._generations += 1
        gen = _Generation(self._generations)
        n_channels, requested = self._planned_slots()
        control_parent, control_child = Pipe()
        pairs = [Pipe() for _ in range(n_channels)]
        child_conns = [control_child] + [child for _, child in pairs]
        argv = [sys.executable, "-m", "minicog.worker", "--control", str(control_child.fileno()),
                "--slots", ",".join(str(child.fileno()) for _, child in pairs)]
        self.setup = SetupInfo()
        self.setup.started_at = _now()
        self.schema = None
        self.num_slots = 0
        self._free = []
        self._set_state("STARTING")
        try:
            gen.popen = subprocess.Popen(argv, pass_fds=[c.fileno() for c in child_conns], cwd=self.cwd,
                                         env=self._child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as exc:
            for conn in [control_parent, *child_conns, *(p for p, _ in pairs)]:
                conn.close()
            self._setup_failed(f"cannot start the worker process: {exc}")
            return
        for conn in child_conns:
            conn.close()
        gen.control = protocol.Channel(control_parent, "control")
        gen.slots = [protocol.Channel(p, f"slot {i}") for i, (p, _) in enumerate(pairs)]
        try:
            gen.pidfd = os.pidfd_open(gen.popen.pid)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            gen.pidfd = None
        gen.wake_r, gen.wake_w = Pipe(duplex=False)
        if self.settings.setup_timeout:
            gen.setup_deadline = time.monotonic() + self.settings.setup_timeout
        self._gen = gen
        try:
            gen.control.send({"type": "init", "ref": self.ref, "mode": self.mode, "num_slots": n_channels,
                              "max_concurrency": requested, "settings": self._worker_settings()})
        except (OSError, ValueError) as exc:
            log.error("cannot send init to the worker: %s", exc)  # its death is noticed by the I/O thread
        gen.thread = threading.Thread(target=self._io_main, args=(gen,), name=f"minicog-orchestrator-{gen.number}",
                                      daemon=True)
        gen.thread.start()

    def _setup_failed(self, error: str) -> None:
        """(lock held)"""
        self.setup.status = "failed"
        self.setup.error = error
        self.setup.completed_at = _now()
        self._set_state("SETUP_FAILED")

    def _shutdown_generation(self, gen: _Generation, timeout: float) -> None:
        if not gen.ready:
            timeout = min(timeout, 1.0)  # setup is not interruptible: do not wait for it
        try:
            if gen.control is not None and not gen.exited:
                gen.control.send({"type": "shutdown"})
        except (OSError, ValueError):
            pass
        if gen.popen is not None:
            try:
                gen.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not exit within %.1fs of shutdown; killing it", gen.popen.pid, timeout)
                gen.popen.kill()
                gen.popen.wait()
        gen.wake()
        if gen.thread is not None and gen.thread is not threading.current_thread():
            gen.thread.join(5.0)

    # -- internals: the I/O thread ------------------------------------------------------------------

    def _io_main(self, gen: _Generation) -> None:
        try:
            self._io_loop(gen)
        except Exception:
            log.exception("orchestrator I/O thread crashed; killing worker %s", gen.popen.pid if gen.popen else None)
            gen.kill_reason = gen.kill_reason or "the orchestrator's I/O thread crashed"
            self._kill(gen)
            self._on_exit(gen)
        finally:
            self._close_generation(gen)

    def _close_generation(self, gen: _Generation) -> None:
        for chan in [gen.control, *gen.slots]:
            if chan is not None:
                chan.close()
        for conn in (gen.wake_r, gen.wake_w):
            try:
                if conn is not None:
                    conn.close()
            except OSError:
                pass
        if gen.pidfd is not None:
            try:
                os.close(gen.pidfd)
            except OSError:
                pass
            gen.pidfd = None

    def _kill(self, gen: _Generation) -> None:
        if gen.popen is not None and gen.popen.poll() is None:
            try:
                gen.popen.kill()
            except OSError:
                pass

    def _next_timeout(self, gen: _Generation) -> Optional[float]:
        now = time.monotonic()
        deadlines = []
        with self._lock:
            if gen.setup_deadline is not None and not gen.ready:
                deadlines.append(gen.setup_deadline)
            for flight in self._flights.values():
                if flight.gen is gen and flight.cancel_deadline is not None:
                    deadlines.append(flight.cancel_deadline)
            if self._hc is not None and self._gen is gen:
                deadlines.append(self._hc.deadline)
        if gen.pidfd is None:
            deadlines.append(now + _POLL_INTERVAL)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _io_loop(self, gen: _Generation) -> None:
        assert gen.control is not None and gen.popen is not None
        conns: dict[Any, int] = {}
        by_fd: dict[int, Any] = {}
        gone: set[int] = set()  # indexes whose channel reached EOF
        # One poll object for the generation's life: multiprocessing's wait() builds a
        # selector on every call, which dominated the cost of a streamed item.
        poller = select.poll()
        mask = select.POLLIN | select.POLLHUP | select.POLLERR

        def rebuild() -> None:
            for fd in by_fd:
                poller.unregister(fd)
            by_fd.clear()
            conns.clear()
            with self._lock:
                gen.rebuild = False
                if -1 not in gone:
                    conns[gen.control.conn] = -1  # type: ignore[union-attr]
                if -2 not in gone:
                    conns[gen.wake_r] = -2
                if gen.pidfd is not None:
                    conns[gen.pidfd] = -3
                for i, chan in enumerate(gen.slots):
                    if chan is not None and i not in gone:
                        conns[chan.conn] = i
            for obj in conns:
                fd = obj if isinstance(obj, int) else obj.fileno()
                by_fd[fd] = obj
                poller.register(fd, mask)

        rebuild()
        while True:
            if gen.rebuild:
                rebuild()
            timeout = self._next_timeout(gen)
            events = poller.poll(None if timeout is None else int(timeout * 1000) + 1)
            ready = [by_fd[fd] for fd, _ in events if fd in by_fd]
            dead = False
            for obj in ready:
                index = conns.get(obj)
                if index is None or getattr(obj, "closed", False):
                    continue  # closed by _on_ready/_poison after wait() returned
                if index == -2:
                    try:
                        while obj.poll():
                            obj.recv_bytes()
                    except (EOFError, OSError):
                        gone.add(-2)
                        gen.rebuild = True
                    continue
                if index == -3:
                    dead = True
                    continue
                try:
                    msg = protocol.recv(obj)
                except (EOFError, OSError, protocol.ProtocolError) as exc:
                    gone.add(index)
                    gen.rebuild = True
                    if index == -1:
                        dead = True
                    elif not gen.ready:
                        pass  # the worker closes the channels it will not serve before ready
                    elif self._exits_soon(gen):
                        dead = True  # the worker is exiting: its fds close before it is reaped
                    else:
                        self._poison(gen, index, f"Slot channel broken: {describe(exc)}")
                    continue
                if index == -1:
                    self._on_control(gen, msg)
                else:
                    self._on_slot(gen, index, msg)
            if not dead and gen.pidfd is None and gen.popen.poll() is not None:
                dead = True
            if dead:
                # Read what the worker managed to send before it went away (its last log lines),
                # for a bounded time: a child of the model could still hold the channel open.
                drain_until = time.monotonic() + 2.0
                for obj, index in list(conns.items()):
                    if index < -1:
                        continue
                    try:
                        while time.monotonic() < drain_until and obj.poll():
                            msg = protocol.recv(obj)
                            if index == -1:
                                self._on_control(gen, msg)
                            else:
                                self._on_slot(gen, index, msg)
                    except (EOFError, OSError, protocol.ProtocolError):
                        pass
                self._on_exit(gen)
                return
            self._check_deadlines(gen)
            with self._lock:
                if self.state == "STOPPED" and (gen.exited or gen.popen.poll() is not None):
                    self._on_exit(gen)
                    return

    def _exits_soon(self, gen: _Generation) -> bool:
        assert gen.popen is not None
        try:
            gen.popen.wait(0.5)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _check_deadlines(self, gen: _Generation) -> None:
        now = time.monotonic()
        expired_hc = None
        kill = None
        with self._lock:
            if gen.setup_deadline is not None and not gen.ready and now >= gen.setup_deadline and self._gen is gen \
                    and self.state == "STARTING":
                self._setup_failed(f"Setup timed out after {self.settings.setup_timeout:g} seconds (COG_SETUP_TIMEOUT)")
                gen.kill_reason = "setup timed out"
                gen.setup_deadline = None
                kill = gen
            for flight in self._flights.values():
                if flight.gen is gen and flight.cancel_deadline is not None and now >= flight.cancel_deadline:
                    if gen.kill_reason is None:
                        gen.kill_reason = (f"prediction {flight.id} did not stop within "
                                           f"{self.settings.cancel_grace_period:g}s of being canceled")
                    flight.cancel_deadline = None
                    kill = gen
            if self._hc is not None and self._gen is gen and now >= self._hc.deadline:
                expired_hc = self._hc
        if kill is not None:
            log.warning("killing worker %d: %s", gen.popen.pid if gen.popen else -1, gen.kill_reason)
            self._kill(gen)
        if expired_hc is not None:
            self._finish_healthcheck(expired_hc, (False, "healthcheck timed out"))

    def _on_control(self, gen: _Generation, msg: dict) -> None:
        kind = msg["type"]
        if kind == "log":
            source, data = str(msg.get("source", "stdout")), str(msg.get("data", ""))
            with self._lock:
                in_setup = not gen.ready and self._gen is gen
                if in_setup:
                    self.setup.add(source, data)
            if not in_setup:
                for line in data.splitlines():
                    if line.strip():
                        worker_log.warning("orphan %s: %s", source, line)
        elif kind == "worker_log":
            level = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "warn": logging.WARNING,
                     "error": logging.ERROR}.get(str(msg.get("level")), logging.INFO)
            message = str(msg.get("message", ""))
            worker_log.log(level, "%s", message)
            with self._lock:
                if not gen.ready and self._gen is gen:
                    self.setup.add("minicog", f"[minicog] {message}\n")
        elif kind == "ready":
            self._on_ready(gen, msg)
        elif kind == "setup_failed":
            with self._lock:
                gen.ready = False
                gen.setup_deadline = None
                if self._gen is gen and self.state == "STARTING":
                    self._setup_failed(str(msg.get("error") or "setup failed"))
        elif kind == "healthcheck_result":
            with self._lock:
                hc = self._hc if self._hc is not None and self._hc.id == msg.get("id") else None
            if hc is not None:
                if msg.get("status") == "healthy":
                    self._finish_healthcheck(hc, (True, None))
                else:
                    self._finish_healthcheck(hc, (False, str(msg.get("error") or "unhealthy")))
        elif kind == "dropped_logs":
            worker_log.warning("Log production exceeds consumption rate. %s logs dropped", msg.get("count"))
        elif kind == "fatal":
            gen.fatal = str(msg.get("reason") or "")
            worker_log.error("worker fatal: %s", gen.fatal)
        elif kind == "shutting_down":
            pass  # the process exit itself is what the I/O thread acts on
        else:
            log.warning("unexpected control message %r from the worker", kind)

    def _on_ready(self, gen: _Generation, msg: dict) -> None:
        with self._lock:
            if self._gen is not gen or self.state != "STARTING":
                return  # e.g. ready after a setup timeout: this worker is being killed
            n = max(1, min(int(msg.get("num_slots") or 1), len(gen.slots)))
            for chan in gen.slots[n:]:
                if chan is not None:
                    chan.close()
            del gen.slots[n:]
            gen.rebuild = True
            gen.ready = True
            gen.setup_deadline = None
            self.num_slots = n
            self._free = list(range(n))
            self.schema = msg.get("schema")
            self.streaming = bool(msg.get("streaming"))
            self.is_async = bool(msg.get("is_async"))
            self.has_healthcheck = bool(msg.get("has_healthcheck"))
            self.setup.status = "succeeded"
            self.setup.completed_at = _now()
            self._set_state("READY")

    def _poison(self, gen: _Generation, index: int, error: str) -> None:
        log.error("slot %d poisoned: %s", index, error)
        with self._lock:
            if index < len(gen.slots) and gen.slots[index] is not None:
                gen.slots[index].close()  # type: ignore[union-attr]
                gen.slots[index] = None
                gen.rebuild = True
            if self._gen is gen and index in self._free:
                self._free.remove(index)
            flight = next((f for f in self._flights.values() if f.gen is gen and f.slot == index), None)
            if flight is not None:
                del self._flights[flight.id]
        if flight is not None:
            _call(flight.listener, "failed", error)

    def _flight_on(self, gen: _Generation, index: int) -> Optional[_Flight]:
        with self._lock:
            for flight in self._flights.values():
                if flight.gen is gen and flight.slot == index:
                    return flight
        return None

    def _on_slot(self, gen: _Generation, index: int, msg: dict) -> None:
        flight = self._flight_on(gen, index)
        kind = msg["type"]
        if flight is None:
            log.warning("message %r on idle slot %d ignored", kind, index)
            return
        listener = flight.listener
        if kind == "log":
            _call(listener, "log", str(msg.get("source", "stdout")), str(msg.get("data", "")))
        elif kind == "output":
            _call(listener, "output", int(msg.get("index", 0)), msg.get("value"))
        elif kind == "output_file":
            path = str(msg.get("path"))
            try:
                with open(path, "rb") as f:
                    value = json.loads(f.read())
            except (OSError, ValueError) as exc:
                flight.error = flight.error or f"Failed to read spilled output: {exc}"
            else:
                _call(listener, "output", int(msg.get("index", 0)), value)
            finally:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        elif kind == "file":
            _call(listener, "file_output", int(msg.get("index", 0)), str(msg.get("path")), msg.get("mime"))
        elif kind == "metric":
            _call(listener, "metric", str(msg.get("name")), msg.get("value"), str(msg.get("mode") or "replace"))
        elif kind in protocol.TERMINAL:
            with self._lock:
                ours = self._flights.get(flight.id) is flight
                if ours:
                    del self._flights[flight.id]
                if self._gen is gen and self.state == "READY" and gen.slots[index] is not None \
                        and index not in self._free:
                    self._free.append(index)
            if not ours:
                return  # stop() ended it on another thread meanwhile: one terminal call only
            if flight.cancel_requested or kind == "canceled":
                _call(listener, "canceled")
            elif kind == "failed":
                _call(listener, "failed", str(msg.get("error") or "Prediction failed"))
            elif flight.error:
                _call(listener, "failed", flight.error)
            else:
                _call(listener, "succeeded", bool(msg.get("is_stream")))
        else:
            log.warning("unexpected slot message %r ignored", kind)

    def _on_exit(self, gen: _Generation) -> None:
        """The worker process of *gen* is gone (or going): reap it, end its predictions, respawn."""
        assert gen.popen is not None
        try:
            code = gen.popen.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self._kill(gen)
            code = gen.popen.wait()
        gen.exited = True
        desc = _describe_exit(code)
        if gen.fatal:
            desc += f" ({gen.fatal})"
        with self._lock:
            flights = [f for f in self._flights.values() if f.gen is gen]
            for f in flights:
                del self._flights[f.id]
            current = self._gen is gen
            hc = self._hc if current else None
            if current:
                self._hc = None
                self._free = []
            respawn = False
            if current and self.state == "STARTING":
                self._setup_failed(f"Worker crashed during setup: {desc}")
            elif current and self.state == "READY":
                if gen.kill_reason is None:
                    now = time.monotonic()
                    self._deaths.append(now)
                    while self._deaths and now - self._deaths[0] > self.settings.worker_restart_window:
                        self._deaths.popleft()
                    if len(self._deaths) > self.settings.max_worker_restarts:
                        log.error("worker crashed (%s) %d times within %gs: DEFUNCT", desc, len(self._deaths),
                                  self.settings.worker_restart_window)
                        self._set_state("DEFUNCT")
                    else:
                        log.error("worker crashed (%s); restarting it", desc)
                        respawn = True
                else:
                    log.warning("worker killed (%s): %s; restarting it", desc, gen.kill_reason)
                    respawn = True
            if respawn:
                self._spawn()
        if hc is not None:
            hc.result = (False, f"Healthcheck error: worker crashed: {desc}")
            hc.event.set()
        for flight in flights:
            if flight.cancel_requested:
                _call(flight.listener, "canceled")
            elif gen.kill_reason is not None:
                _call(flight.listener, "failed", f"Worker restarted: {gen.kill_reason}")
            elif self.state == "STOPPED":
                _call(flight.listener, "failed", "Worker stopped: the server is shutting down")
            else:
                _call(flight.listener, "failed", f"Worker crashed: {desc}")
