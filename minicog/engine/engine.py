"""The engine's facade: worker seats, states, the slot pool, restarts, submit, healthcheck, stop.

An :class:`Engine` runs one model in ``workers`` worker processes (seats).
Each seat has its own slots, setup, state and restart budget; a seat's
process is a :class:`~minicog.engine.process.WorkerProcess`, respawned on its
own when it dies.  :meth:`Engine.submit` returns a
:class:`~minicog.engine.run.Run`, the one owner of that run's state.
Contracts (states, slots, cancels, failures, error texts): docs/architecture.rst.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Optional, Sequence

from minicog import errors, protocol
from minicog.settings import Settings

from .listener import Listener
from .process import WorkerProcess, call_listener
from .run import Run, Unattached

__all__ = ["Engine", "SetupInfo", "STATES", "DuplicateRun"]

log = logging.getLogger("minicog.orchestrator")

STATES = ("STARTING", "READY", "SETUP_FAILED", "DEFUNCT", "STOPPED")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _rss_mib(pid: Optional[int]) -> Optional[float]:
    """Resident memory of process *pid* in MiB (Linux /proc), None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")  # compiled once: one lookup fewer per run


def _safe_name(prediction_id: str) -> str:
    return _UNSAFE_IN_NAME.sub("_", prediction_id)[:64] or "prediction"


class DuplicateRun(errors.RequestError):
    """:meth:`Engine.submit` was given the id of a run in flight; ``run`` is that run."""

    def __init__(self, run: Run):
        super().__init__(f"a prediction with id {run.id!r} is already running")
        self.run = run


class SetupInfo:
    """What /health-check reports under ``setup`` for one worker's setup.

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


class _Healthcheck:
    __slots__ = ("id", "event", "result", "deadline")

    def __init__(self, hc_id: str, deadline: float):
        self.id = hc_id
        self.event = threading.Event()
        self.result: Optional[tuple[bool, Optional[str]]] = None
        self.deadline = deadline


class _Seat:
    """One worker seat: its current process, slots, setup, state and restart budget."""

    def __init__(self, index: int, device: Optional[str]):
        self.index = index
        self.device = device  # CUDA_VISIBLE_DEVICES for this worker, or None to inherit
        self.state = "STARTING"
        self.setup = SetupInfo()
        self.proc: Optional[WorkerProcess] = None
        self.generations = 0
        self.num_slots = 0
        self.free: list[int] = []
        self.deaths: collections.deque[float] = collections.deque()
        self.hc: Optional[_Healthcheck] = None
        self.health: Optional[tuple[bool, Optional[str]]] = None  # the last healthcheck's answer
        self.recycle_pending = False  # retiring, or its replacement still setting up

    def describe(self) -> dict[str, Any]:
        """(engine lock held) This worker's entry in the health document."""
        doc: dict[str, Any] = {"index": self.index, "status": self.state,
                               "pid": self.proc.pid if self.proc is not None else None,
                               "slots": self.num_slots, "free_slots": len(self.free) if self.state == "READY" else 0}
        if self.device is not None:
            doc["device"] = self.device
        if self.health is not None and not self.health[0]:
            doc["user_healthcheck_error"] = self.health[1]
        return doc


class Engine:
    """Runs one model in worker subprocesses; see docs/architecture.rst ("Engine").

    Public attributes: ``state``, ``setup`` (:class:`SetupInfo`), ``schema``,
    ``num_slots``, ``free_slots``, ``streaming``, ``is_async``, ``has_healthcheck``,
    ``pid`` (the first worker's, or None), ``workers`` (how many).
    """

    def __init__(self, ref: str, *, mode: str = "predict", settings: Optional[Settings] = None,
                 max_concurrency: Optional[int] = None, cwd: Optional[str] = None,
                 env: Optional[dict[str, str]] = None, workers: int = 1,
                 devices: Optional[Sequence[Optional[str]]] = None):
        if mode not in ("predict", "train"):
            raise ValueError(f"mode must be 'predict' or 'train', not {mode!r}")
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, not {workers!r}")
        if devices is not None and len(devices) != int(workers):
            raise ValueError(f"{len(devices)} devices given for {workers} workers")
        self.ref = ref
        self.mode = mode
        self.settings = settings if settings is not None else Settings.from_env()
        self.max_concurrency = max_concurrency
        self.cwd = os.path.abspath(cwd) if cwd else os.getcwd()
        self.env = dict(env) if env is not None else None
        self.workers = int(workers)

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.state = "STARTING"
        self.schema: Optional[dict] = None
        # The first worker's ``schema`` message (sent before setup(); see wait_schema).
        # ``schema`` itself is set only on ready, so /openapi.json stays 503 during setup.
        self._early_schema: Optional[dict] = None
        self._schema_arrived = False
        self.streaming = False
        self.is_async = False
        self.has_healthcheck = False
        self._seats = [_Seat(i, None if devices is None else devices[i]) for i in range(self.workers)]
        self._runs: dict[str, Run] = {}  # in flight, by id: the only map of runs
        self._live: set[Run] = set()  # submitted, folder not removed yet
        self._hc_counter = 0
        self._tmp_root: Optional[str] = None
        self._dir_numbers = itertools.count(1)  # next() is atomic: no lock to number a folder
        self._started = False
        self._stopped = False
        #: Workers replaced, by cause: ``crash`` (died by itself), ``cancel_timeout`` (killed:
        #: a canceled prediction did not stop in time), ``recycle`` (replaced after a limit).
        self.restarts: dict[str, int] = {"crash": 0, "cancel_timeout": 0, "recycle": 0}

    # -- public properties ----------------------------------------------------------------
    @property
    def setup(self) -> SetupInfo:
        """The setup of the worker that best explains the state (a ready one, else a failed one, else the first)."""
        with self._lock:
            for wanted in ("READY", "SETUP_FAILED", "DEFUNCT"):
                for seat in self._seats:
                    if seat.state == wanted:
                        return seat.setup
            return self._seats[0].setup

    @property
    def num_slots(self) -> int:
        with self._lock:
            return sum(s.num_slots for s in self._seats)

    @property
    def free_slots(self) -> int:
        with self._lock:
            if self._stopped:
                return 0
            return sum(len(s.free) for s in self._seats if s.state == "READY")

    @property
    def pid(self) -> Optional[int]:
        proc = self._seats[0].proc
        return proc.pid if proc is not None else None

    @property
    def pids(self) -> list[Optional[int]]:
        """Each worker's process id (None while it has none)."""
        return [s.proc.pid if s.proc is not None else None for s in self._seats]

    @property
    def started(self) -> bool:
        """True once :meth:`start` was called."""
        return self._started

    def idle(self) -> bool:
        """True while no run is dispatched (a hint read without the lock)."""
        return not self._runs

    def in_flight(self) -> list[str]:
        """Ids of the runs currently dispatched."""
        with self._lock:
            return list(self._runs)

    def find(self, run_id: str) -> Optional[Run]:
        """The run in flight with this id, or None."""
        with self._lock:
            return self._runs.get(run_id)

    def open_runs(self) -> list[Run]:
        """Runs submitted whose folder is not removed yet (not ended, or not released)."""
        with self._lock:
            return list(self._live)

    def worker_states(self) -> list[dict[str, Any]]:
        """One entry per worker: ``index``, ``status``, ``pid``, ``slots``, ``free_slots``
        (and ``device``, ``user_healthcheck_error`` when they apply)."""
        with self._lock:
            return [seat.describe() for seat in self._seats]

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Spawn the workers and return at once; setup continues in the background."""
        with self._lock:
            if self._started:
                raise RuntimeError("Engine.start() called twice")
            self._started = True
            base = self.settings.tmp_dir or None
            if base:
                os.makedirs(base, exist_ok=True)
            self._tmp_root = tempfile.mkdtemp(prefix="minicog-", dir=base)
            for seat in self._seats:
                self._spawn(seat)

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        """Wait until the state is not STARTING; True if it is READY."""
        with self._cond:
            self._cond.wait_for(lambda: self.state != "STARTING", timeout)
            return self.state == "READY"

    def wait_schema(self, timeout: Optional[float] = None) -> Optional[dict]:
        """The OpenAPI document as soon as a worker has sent it, before setup() ends.

        The worker sends it right after importing the model, so a caller can check
        its input while a long setup() runs.  None if the workers failed (or had no
        schema) before sending one, or after *timeout* seconds.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._schema_arrived or self.state != "STARTING", timeout)
            if self.state == "READY":
                return self.schema
            return self._early_schema if self._schema_arrived else None

    def wait_state(self, predicate: Callable[[str], bool], timeout: Optional[float] = None) -> str:
        """Wait until ``predicate(state)`` holds (or the timeout); return the state."""
        with self._cond:
            self._cond.wait_for(lambda: predicate(self.state), timeout)
            return self.state

    def stop(self, timeout: Optional[float] = None) -> None:
        """Send shutdown, kill after *timeout* (``Settings.worker_stop_timeout``), reap.

        Runs still in flight fail with ``Worker stopped`` (their listeners are
        called on this thread).  Idempotent.
        """
        timeout = self.settings.worker_stop_timeout if timeout is None else timeout
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            procs = [s.proc for s in self._seats if s.proc is not None]
            runs = list(self._runs.values())
            self._runs.clear()
            checks = []
            for seat in self._seats:
                seat.free = []
                if seat.hc is not None:
                    checks.append(seat.hc)
                    seat.hc = None
            self._update_state()
        for hc in checks:
            hc.result = (False, "Healthcheck error: worker stopped")
            hc.event.set()
        # Shut every worker down at once: the waits overlap.
        threads = [threading.Thread(target=proc.shutdown, args=(timeout,), daemon=True) for proc in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for run in runs:
            self._finish(run, "failed", "Worker stopped: the server is shutting down")
        if self._tmp_root:
            shutil.rmtree(self._tmp_root, ignore_errors=True)
        with self._lock:
            self._live.clear()

    def __enter__(self) -> "Engine":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- runs ------------------------------------------------------------------------------
    def submit(self, prediction_id: str, input: dict, listener: Optional[Listener], *,
               context: Optional[dict] = None, input_files: Optional[list] = None, wait: bool = False) -> Run:
        """Give a run to a free slot and return its :class:`Run` handle.

        ``listener.started()`` is called by this method before the request is sent;
        every later call comes from a worker's I/O thread.  Raises
        :class:`~minicog.errors.ServiceUnavailable` unless READY,
        :class:`~minicog.errors.AtCapacity` if every slot is busy,
        :class:`DuplicateRun` if *prediction_id* is in flight, and
        :class:`~minicog.errors.RequestError` if the id, context or input cannot be
        sent.  Whatever fails between taking a slot and handing the run to the
        worker gives the slot back.  *input_files* (``[[name, index or None, path]]``)
        are file inputs the parent already decoded (:mod:`minicog.server.spool`): the
        worker uses those paths instead of fetching the values.

        *wait*: the caller waits for the run next, on its own thread (a sync request),
        and must call :meth:`Run.wait` or :meth:`Run.read_until` (any timeout) at least once.  The slot is then
        kept from the I/O thread before the request is sent, so the answer never wakes
        that thread, even when it comes back before the caller starts waiting.

        *listener* ``None`` (with *wait* only): the request goes to the worker before
        the caller has built its listener, which it gives with :meth:`Run.attach`
        right after (then ``started()`` is called there, after the request was sent).
        Until then the run is found by :meth:`find` but its listener is a stand-in
        (:meth:`Run.listener_now` waits for the real one).
        """
        if listener is None and not wait:
            raise ValueError("a run submitted without a listener must be waited for (wait=True)")
        prediction_id = str(prediction_id)
        # Everything that can fail without a slot is done first, so it reserves nothing.
        # Readiness is checked with the slot taken below (nothing here reserves anything).
        root, name = self._tmp_root, f"{_safe_name(prediction_id)}-{next(self._dir_numbers)}"
        folder = f"{root}{os.sep}{name}" if root else name  # os.path.join, without its steps
        context = dict(context or {})
        value = input if input is not None else {}
        try:
            # The input alone through the encoder (an empty one not even that); the rest
            # of the frame is written around it (protocol.predict_message).
            data: Optional[bytes] = b"{}" if type(value) is dict and not value else protocol.dumps(value)
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) is a ValueError
            raise errors.RequestError(f"input is not JSON: {exc}") from None
        # Too big to go inline: the worker reads it from a file (written below), and the
        # frame says where.
        inline = len(data) <= self.settings.max_inline_ipc_bytes
        try:
            frame = protocol.predict_message(prediction_id, folder, context=context, input_files=input_files,
                                             input_json=data if inline else None)
        except (TypeError, ValueError) as exc:
            raise errors.RequestError(f"the prediction id or context cannot be sent: {exc}") from None
        if inline:
            data = None
        with self._lock:
            self._check_ready()
            existing = self._runs.get(prediction_id)
            if existing is not None:
                raise DuplicateRun(existing)
            seat = self._pick_seat()
            if seat is None:
                raise errors.AtCapacity()
            proc = seat.proc
            assert proc is not None
            run = Run(prediction_id, Unattached() if listener is None else listener, folder=folder, engine=self)
            run.seat, run.proc, run.slot = seat, proc, seat.free.pop(0)
            self._runs[prediction_id] = run
            self._live.add(run)
        handed = False
        try:
            if data is not None:  # too big to go inline: the worker reads it from a file
                spill_dir = os.path.join(folder, "inputs")
                os.makedirs(spill_dir, exist_ok=True)
                spill = os.path.join(spill_dir, "input.json")
                with open(spill, "wb") as f:
                    f.write(data)
                frame = protocol.predict_message(prediction_id, folder, context=context, input_files=input_files,
                                                 input_file=spill)
            if listener is not None:
                call_listener(listener, "started")
            if wait:
                proc.take_slot(run.slot)
            else:
                proc.give_slot(run.slot)  # the I/O thread reads what nobody waits for
            channel = proc.slots[run.slot] if run.slot < len(proc.slots) else None
            handed = True  # from here on, a failure is the channel's: the slot is poisoned
            if channel is None:
                raise BrokenPipeError("slot channel closed")
            channel.send_raw(frame)
        except BaseException as exc:
            if not handed:
                self._unreserve(run)
                if isinstance(exc, OSError):
                    raise errors.WorkerError(f"cannot prepare the prediction's temporary folder: {exc}") from None
                raise
            if not isinstance(exc, (OSError, ValueError)):
                raise
            # The slot's channel is broken: it is never reused (the worker's death, if
            # that is the cause, is handled by its I/O thread).
            with self._lock:
                mine = self._runs.get(prediction_id) is run
                if mine:
                    del self._runs[prediction_id]
            if mine:
                log.error("slot %d poisoned: cannot send prediction %s: %s", run.slot, prediction_id, exc)
                self._finish(run, "failed", f"Failed to send request: {exc}")
            return run
        with self._lock:
            run.sent = True
            canceled = run.cancel_deadline is not None and not run.finished
        if canceled:
            self._send_cancel(run, first=True)  # cancel() ran before the request was out
        return run

    def full(self) -> bool:
        """True when the engine is READY and every slot of every ready worker is taken.

        A hint read without the lock (:meth:`submit` decides): it lets a request that
        will be answered 409 skip building what a run needs, so a flood of them costs
        little of the CPU the running predictions need.
        """
        if self.state != "READY":
            return False  # submit answers why (503)
        for seat in self._seats:
            if seat.state == "READY" and seat.free and not (seat.proc is not None and seat.proc.retiring):
                return False
        return True

    def _pick_seat(self) -> Optional[_Seat]:
        """(lock held) The ready seat with the most free slots (the first on a tie)."""
        best = None
        for seat in self._seats:
            if seat.state == "READY" and seat.free and (best is None or len(seat.free) > len(best.free)) \
                    and not (seat.proc is not None and seat.proc.retiring):
                best = seat
        return best

    def _unreserve(self, run: Run) -> None:
        """Undo a submit that never reached the worker: slot back, run forgotten, folder gone."""
        with self._lock:
            if self._runs.get(run.id) is run:
                del self._runs[run.id]
            self._live.discard(run)
            seat, proc = run.seat, run.proc
            if seat is not None and seat.proc is proc and seat.state == "READY" and proc is not None \
                    and run.slot < len(proc.slots) and proc.slots[run.slot] is not None and run.slot not in seat.free:
                seat.free.insert(0, run.slot)
            run.finished = True
        if run.folder:
            shutil.rmtree(run.folder, ignore_errors=True)

    def cancel(self, prediction_id: str) -> bool:
        """Cancel the run in flight with this id; False if there is none (see :meth:`Run.cancel`)."""
        run = self.find(str(prediction_id))
        return run.cancel() if run is not None else False

    def _cancel_run(self, run: Run, *, client: bool = True) -> bool:
        """Set the run's cancel flag (*client*) and tell its worker; False if it is not in flight.

        ``client=False`` stops the worker's run without the flag: the owner's own
        cancel after an output failure must not turn that failure into ``canceled``.
        """
        with self._lock:
            if client:
                run.cancel_requested = True  # also after the end: an owner may still be finishing
            if run.finished or self._runs.get(run.id) is not run:
                return False
            first = run.cancel_deadline is None
            if first:
                run.cancel_deadline = time.monotonic() + self.settings.cancel_grace_period
            # Until its request is on the slot channel, submit() sends the cancel after it.
            sent = run.sent
            proc = run.proc
        assert proc is not None
        if first:
            proc.wake()
        if sent:
            self._send_cancel(run, first=first)
        return True

    def _send_cancel(self, run: Run, *, first: bool) -> None:
        """The cancel goes on the control channel, and the first time also on the run's slot.

        A sync worker's main thread reads its slot itself; the copy queued behind the
        request reaches it even if the control cancel was read before the worker knew
        the run (see ``minicog.worker.main``).  One copy per run keeps the slot's
        buffer from filling while the prediction runs.
        """
        proc = run.proc
        assert proc is not None
        if first:
            channel = proc.slots[run.slot] if run.slot < len(proc.slots) else None
            try:
                if channel is not None:
                    channel.send({"type": "cancel", "id": run.id})
            except (OSError, ValueError):
                pass  # a broken slot: the I/O thread fails the run
        proc.send_control({"type": "cancel", "id": run.id})

    def _stop_run(self, run: Run) -> bool:
        return self._cancel_run(run, client=False)

    def release(self, prediction_id: str, listener: Any = None) -> None:
        """Release the runs with this id (only the one with *listener* if given); see :meth:`Run.release`."""
        prediction_id = str(prediction_id)
        with self._lock:
            runs = [r for r in self._live if r.id == prediction_id and (listener is None or r.listener is listener)]
        for run in runs:
            run.release()

    def _release_run(self, run: Run) -> None:
        with self._lock:
            if run.released:
                return
            run.released = True
            now = run.finished
        if now:
            self._remove_folder(run)

    def _remove_folder(self, run: Run) -> None:
        """Remove the run's folder exactly once (membership of ``_live`` is the token)."""
        with self._lock:
            if run not in self._live:
                return
            self._live.discard(run)
            # Ended and released: nothing calls the listener again.  A listener that keeps
            # its run (an HTTP record does) made a cycle, freed only by the garbage
            # collector's full passes: 15 objects a record, tens of ms per pass.
            run.listener = None
        if run.folder:
            shutil.rmtree(run.folder, ignore_errors=True)

    def _finish(self, run: Run, method: str, *args: Any) -> None:
        """Give the listener its terminal call, once; then remove the folder if it was released.

        A run not attached to its listener yet keeps the call for :meth:`Run.attach`.
        """
        with self._lock:
            if run.finished:
                return
            run.finished = True
            listener = run.listener
            if type(listener) is Unattached:
                listener.terminal = (method, args)
                listener = None
        if listener is not None:
            call_listener(listener, method, *args)
        run._mark_finished()
        if run.released:
            self._remove_folder(run)

    def _attach(self, run: Run, listener: Any) -> None:
        """:meth:`Run.attach`: the listener's ``started``, then the end if it came first."""
        with self._lock:  # against _finish keeping the run's end in the stand-in
            held = run.listener
            if type(held) is not Unattached:
                raise RuntimeError(f"run {run.id!r} was not submitted without a listener, or has one already")
            run.listener = listener
        held.attached.set()
        call_listener(listener, "started")
        if held.terminal is not None:
            call_listener(listener, held.terminal[0], *held.terminal[1])

    # -- health ----------------------------------------------------------------------------
    def healthcheck(self) -> tuple[bool, Optional[str]]:
        """Run the model's healthcheck in every ready worker: ``(healthy, error)``.

        Healthy when at least one ready worker says so; concurrent callers share
        each worker's check.  Only meaningful when READY; otherwise ``(False,
        "Healthcheck error: ...")``.  Blocks up to ``settings.healthcheck_parent_timeout``.
        """
        pending: list[tuple[_Seat, _Healthcheck, bool]] = []
        with self._lock:
            if self.state != "READY":
                return False, f"Healthcheck error: worker is {self.state}"
            for seat in self._seats:
                if seat.state != "READY" or seat.proc is None:
                    continue
                send = seat.hc is None
                if send:
                    self._hc_counter += 1
                    seat.hc = _Healthcheck(f"hc_{self._hc_counter}",
                                           time.monotonic() + self.settings.healthcheck_parent_timeout)
                pending.append((seat, seat.hc, send))  # type: ignore[arg-type]
        for seat, hc, send in pending:
            if send:
                proc = seat.proc
                assert proc is not None
                proc.wake()
                try:
                    assert proc.control is not None
                    proc.control.send({"type": "healthcheck", "id": hc.id})
                except (OSError, ValueError, AssertionError) as exc:
                    self._finish_healthcheck(seat, hc, (False, f"Healthcheck error: {exc}"))
        results = []
        for seat, hc, _ in pending:
            hc.event.wait(self.settings.healthcheck_parent_timeout + 1.0)
            result = hc.result if hc.result is not None else (False, "healthcheck timed out")
            seat.health = result
            results.append(result)
        if not results:
            return False, "Healthcheck error: no worker is ready"
        for result in results:
            if result[0]:
                return True, None
        return results[0]

    def _finish_healthcheck(self, seat: _Seat, hc: _Healthcheck, result: tuple[bool, Optional[str]]) -> None:
        with self._lock:
            if seat.hc is hc:
                seat.hc = None
        if hc.result is None:
            hc.result = result
        hc.event.set()

    # -- internals: state ------------------------------------------------------------------
    def _update_state(self) -> None:
        """(lock held) The engine's state from its workers': READY while one is ready."""
        if self._stopped:
            state = "STOPPED"
        else:
            states = {s.state for s in self._seats}
            for state in ("READY", "STARTING", "SETUP_FAILED", "DEFUNCT"):
                if state in states:
                    break
        if state != self.state:
            log.info("worker state %s -> %s", self.state, state)
            self.state = state
        self._cond.notify_all()

    def _set_seat_state(self, seat: _Seat, state: str) -> None:
        """(lock held)"""
        if seat.state != state:
            if self.workers > 1:
                log.info("worker %d state %s -> %s", seat.index, seat.state, state)
            seat.state = state
        self._update_state()

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

    def _seat_setup_failed(self, seat: _Seat, error: str) -> None:
        """(lock held)"""
        seat.setup.status = "failed"
        seat.setup.error = error
        seat.setup.completed_at = _now()
        seat.recycle_pending = False  # a failed replacement must not block other recycles
        if self.workers > 1:
            # The engine may stay READY on the other workers, so no state change (which the
            # service logs) would tell the operator why this one failed.
            log.error("worker %d: %s", seat.index, error)
        self._set_seat_state(seat, "SETUP_FAILED")

    # -- internals: spawning ---------------------------------------------------------------
    def _planned_slots(self) -> tuple[int, Optional[int]]:
        """(channels to open, max_concurrency to send): see "Slots" in docs/architecture.rst."""
        requested = self.settings.max_concurrency or self.max_concurrency
        if requested:
            return int(requested), int(requested)
        return max(1, int(self.settings.slot_channel_limit)), None

    def _child_env(self, seat: _Seat) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        # The worker must import this very minicog, installed or not.
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        parts = [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_parent]
        env["PYTHONPATH"] = os.pathsep.join(parts)
        if seat.device is not None:
            env["CUDA_VISIBLE_DEVICES"] = seat.device
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
            "cancel_resignal_interval": s.cancel_resignal_interval,
            "spin_wait": s.spin_window(),
        }

    def _spawn(self, seat: _Seat) -> None:
        """(lock held) Start a new process for *seat*: channels, process, init, I/O thread."""
        seat.generations += 1
        proc = WorkerProcess(self, seat, seat.generations)
        n_channels, requested = self._planned_slots()
        seat.setup = SetupInfo()
        seat.setup.started_at = _now()
        seat.num_slots = 0
        seat.free = []
        seat.health = None
        seat.proc = proc
        self._set_seat_state(seat, "STARTING")
        if self.settings.setup_timeout:
            proc.setup_deadline = time.monotonic() + self.settings.setup_timeout
        init = {"type": "init", "ref": self.ref, "mode": self.mode, "num_slots": n_channels,
                "max_concurrency": requested, "settings": self._worker_settings()}
        error = proc.spawn(n_channels=n_channels, cwd=self.cwd, env=self._child_env(seat), init=init)
        if error is not None:
            self._seat_setup_failed(seat, error)

    # -- callbacks from the worker processes' I/O threads ----------------------------------
    def _stopping(self, proc: WorkerProcess) -> bool:
        return self._stopped

    def _next_deadline(self, proc: WorkerProcess) -> Optional[float]:
        """Seconds until the next deadline *proc*'s I/O thread must act on (None: none)."""
        now = time.monotonic()
        deadlines = []
        with self._lock:
            if proc.setup_deadline is not None and not proc.ready:
                deadlines.append(proc.setup_deadline)
            if proc.stop_deadline is not None:
                deadlines.append(proc.stop_deadline)
            for run in self._runs.values():
                if run.proc is proc and run.cancel_deadline is not None:
                    deadlines.append(run.cancel_deadline)
            seat = proc.seat
            if seat.hc is not None and seat.proc is proc:
                deadlines.append(seat.hc.deadline)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _check_deadlines(self, proc: WorkerProcess) -> None:
        now = time.monotonic()
        expired_hc = None
        kill = False
        seat = proc.seat
        with self._lock:
            if proc.setup_deadline is not None and not proc.ready and now >= proc.setup_deadline \
                    and seat.proc is proc and seat.state == "STARTING":
                self._seat_setup_failed(
                    seat, f"Setup timed out after {self.settings.setup_timeout:g} seconds (COG_SETUP_TIMEOUT)")
                proc.kill_reason = "setup timed out"
                proc.setup_deadline = None
                kill = True
            for run in self._runs.values():
                if run.proc is proc and run.cancel_deadline is not None and now >= run.cancel_deadline:
                    if proc.kill_reason is None:
                        proc.kill_reason = (f"prediction {run.id} did not stop within "
                                            f"{self.settings.cancel_grace_period:g}s of being canceled")
                    run.cancel_deadline = None
                    kill = True
            if seat.hc is not None and seat.proc is proc and now >= seat.hc.deadline:
                expired_hc = seat.hc
            if proc.stop_deadline is not None and now >= proc.stop_deadline:
                proc.stop_deadline = None
                kill = True  # a recycled worker that did not exit after the shutdown message
        if kill:
            log.warning("killing worker %d: %s", proc.popen.pid if proc.popen else -1, proc.kill_reason)
            proc.kill()
        if expired_hc is not None:
            self._finish_healthcheck(seat, expired_hc, (False, "healthcheck timed out"))

    def _setup_output(self, proc: WorkerProcess, source: str, text: str) -> bool:
        """Setup output of *proc*; False when it is not setting up (the caller logs it as orphan output)."""
        with self._lock:
            seat = proc.seat
            in_setup = not proc.ready and seat.proc is proc
            if in_setup:
                seat.setup.add(source, text)
        return in_setup

    def _worker_schema(self, proc: WorkerProcess, doc: Optional[dict]) -> None:
        with self._lock:
            if not self._schema_arrived:
                self._early_schema, self._schema_arrived = doc, True
                self._cond.notify_all()

    def _worker_ready(self, proc: WorkerProcess, msg: dict) -> None:
        seat = proc.seat
        with self._lock:
            if seat.proc is not proc or seat.state != "STARTING" or self._stopped:
                return  # e.g. ready after a setup timeout: this worker is being killed
            n = max(1, min(int(msg.get("num_slots") or 1), len(proc.slots)))
            proc.close_slots_from(n)
            proc.ready = True
            proc.setup_deadline = None
            seat.num_slots = n
            seat.free = list(range(n))
            self.schema = msg.get("schema")
            self.streaming = bool(msg.get("streaming"))
            self.is_async = bool(msg.get("is_async"))
            self.has_healthcheck = bool(msg.get("has_healthcheck"))
            seat.setup.status = "succeeded"
            seat.setup.completed_at = _now()
            seat.recycle_pending = False  # its recycle (if any) is over: another may start
            self._set_seat_state(seat, "READY")

    def _worker_setup_failed(self, proc: WorkerProcess, error: str) -> None:
        seat = proc.seat
        with self._lock:
            proc.ready = False
            proc.setup_deadline = None
            if seat.proc is proc and seat.state == "STARTING":
                self._seat_setup_failed(seat, error)

    def _healthcheck_result(self, proc: WorkerProcess, hc_id: Any, result: tuple[bool, Optional[str]]) -> None:
        seat = proc.seat
        with self._lock:
            hc = seat.hc if seat.hc is not None and seat.hc.id == hc_id else None
        if hc is not None:
            self._finish_healthcheck(seat, hc, result)

    def _run_on(self, proc: WorkerProcess, index: int) -> Optional[Run]:
        with self._lock:
            for run in self._runs.values():
                if run.proc is proc and run.slot == index:
                    return run
        return None

    def _run_ended(self, proc: WorkerProcess, index: int, run: Run, outcome: tuple) -> None:
        """A terminal message: the slot is free again *before* the listener's terminal call."""
        seat, s = proc.seat, self.settings
        rss = _rss_mib(proc.pid) if s.worker_max_rss else None
        with self._lock:
            ours = self._runs.get(run.id) is run
            if ours:
                del self._runs[run.id]
            proc.runs_done += 1
            # Under the same lock as freeing the slot: a worker past a limit must not take
            # the slot's next prediction.  (Without limits, nothing to look at.)
            if proc.retiring is not None or s.worker_max_predictions or s.worker_max_age or s.worker_max_rss:
                self._check_recycle(proc, rss)
            if seat.proc is proc and seat.state == "READY" and index < len(proc.slots) and not proc.retiring \
                    and proc.slots[index] is not None and index not in seat.free:
                seat.free.append(index)
        if not ours:
            return  # stop() ended it on another thread meanwhile: one terminal call only
        if run.cancel_requested or outcome[0] == "canceled":
            self._finish(run, "canceled")
        elif outcome[0] == "failed":
            self._finish(run, "failed", outcome[1])
        elif run.error:
            self._finish(run, "failed", run.error)
        else:
            self._finish(run, "succeeded", outcome[1])

    # -- worker recycling ------------------------------------------------------------------
    def _recycle_reason(self, proc: WorkerProcess, rss: Optional[float]) -> Optional[str]:
        s = self.settings
        if s.worker_max_predictions and proc.runs_done >= s.worker_max_predictions:
            return f"it ran {proc.runs_done} predictions (MINICOG_WORKER_MAX_PREDICTIONS={s.worker_max_predictions})"
        age = time.monotonic() - proc.spawned_at
        if s.worker_max_age and age >= s.worker_max_age:
            return f"it is {age:.0f}s old (MINICOG_WORKER_MAX_AGE={s.worker_max_age:g})"
        if s.worker_max_rss and rss is not None and rss >= s.worker_max_rss:
            return f"it uses {rss:.0f} MiB (MINICOG_WORKER_MAX_RSS={s.worker_max_rss:g})"
        return None

    def _check_recycle(self, proc: WorkerProcess, rss: Optional[float]) -> None:
        """(lock held) Between predictions: retire *proc* if it is past a recycling limit.

        One worker at a time: while another worker is being recycled, or when no other
        worker is READY to serve meanwhile (with several workers), this one carries on
        and is looked at again when its next prediction ends.  A retiring worker takes
        no new prediction, finishes the ones it runs, then gets the shutdown message;
        its exit respawns the seat (setup runs again) and counts as a recycle, not a crash.
        """
        seat = proc.seat
        if self._stopped or seat.proc is not proc or seat.state != "READY":
            return
        if proc.retiring is None:
            reason = self._recycle_reason(proc, rss)
            if reason is None:
                return
            others = [o for o in self._seats if o is not seat]
            if any(o.recycle_pending for o in others):
                return  # one at a time
            if others and not any(o.state == "READY" for o in others):
                return  # capacity must not drop to zero
            proc.retiring = reason
            seat.recycle_pending = True
            log.info("worker %d (pid %s) is recycled: %s; it takes no new predictions", seat.index, proc.pid, reason)
        if not any(r.proc is proc for r in self._runs.values()):
            proc.kill_reason = f"recycled: {proc.retiring}"
            proc.recycling = True
            proc.stop_deadline = time.monotonic() + self.settings.worker_stop_timeout
            seat.free = []
            proc.send_control({"type": "shutdown"})
            proc.wake()

    def _poison(self, proc: WorkerProcess, index: int, error: str) -> None:
        log.error("slot %d poisoned: %s", index, error)
        seat = proc.seat
        with self._lock:
            proc.close_slot(index)
            if seat.proc is proc and index in seat.free:
                seat.free.remove(index)
            run = next((r for r in self._runs.values() if r.proc is proc and r.slot == index), None)
            if run is not None:
                del self._runs[run.id]
        if run is not None:
            self._finish(run, "failed", error)

    def _worker_exited(self, proc: WorkerProcess, desc: str) -> None:
        """*proc* is gone (and reaped): end its runs, respawn its seat if the policy says so."""
        seat = proc.seat
        with self._lock:
            runs = [r for r in self._runs.values() if r.proc is proc]
            for r in runs:
                del self._runs[r.id]
            current = seat.proc is proc
            hc = seat.hc if current else None
            if current:
                seat.hc = None
                seat.free = []
            respawn = False
            counted = proc.kill_reason is None
            what = f"crashed ({desc})"
            if self._stopped or not current:
                pass
            elif seat.state == "STARTING":
                self._seat_setup_failed(seat, f"Worker crashed during setup: {desc}")
                # With several workers, a respawned worker whose setup fails is a crash of
                # that worker only (the model did set up before): retry within the budget.
                respawn = self.workers > 1 and proc.number > 1
                what = "could not set up again"
            elif seat.state == "SETUP_FAILED":
                respawn = self.workers > 1 and proc.number > 1
                counted = True
                what = "could not set up again"
            elif seat.state == "READY":
                respawn = True
            if respawn and counted:
                now = time.monotonic()
                seat.deaths.append(now)
                while seat.deaths and now - seat.deaths[0] > self.settings.worker_restart_window:
                    seat.deaths.popleft()
                if len(seat.deaths) > self.settings.max_worker_restarts:
                    log.error("worker %d %s; %d deaths within %gs: DEFUNCT", seat.index, what,
                              len(seat.deaths), self.settings.worker_restart_window)
                    self._set_seat_state(seat, "DEFUNCT")
                    respawn = False
                else:
                    log.error("worker %d %s; restarting it", seat.index, what)
            elif respawn and proc.recycling:
                log.info("worker %d recycled (%s); a fresh one sets up", seat.index, proc.retiring)
            elif respawn:
                log.warning("worker %d killed (%s): %s; restarting it", seat.index, desc, proc.kill_reason)
            if respawn:
                cause = "crash" if counted else "recycle" if proc.recycling else "cancel_timeout"
                self.restarts[cause] = self.restarts.get(cause, 0) + 1
                self._spawn(seat)
            stopped = self._stopped
        if hc is not None:
            hc.result = (False, f"Healthcheck error: worker crashed: {desc}")
            hc.event.set()
        for run in runs:
            if run.cancel_requested:
                self._finish(run, "canceled")
            elif proc.kill_reason is not None:
                self._finish(run, "failed", f"Worker restarted: {proc.kill_reason}")
            elif stopped:
                self._finish(run, "failed", "Worker stopped: the server is shutting down")
            else:
                self._finish(run, "failed", f"Worker crashed: {desc}")
