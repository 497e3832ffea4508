"""One worker process: spawn it, own its channels, run its I/O loop, decode its messages.

The :class:`~minicog.engine.Engine` decides *what* happens (slots, states,
restarts); a :class:`WorkerProcess` is one generation of one worker: the
subprocess (``sys.executable -m minicog.worker``, never a fork of the server),
its control and slot channels (inherited socketpairs), a wake-up pipe, a pidfd
when the platform has one, and the I/O thread that waits on all of them.  The
thread decodes each message and reports it to its owner, the way
``concurrent.futures.process`` separates its manager thread from the executor.
Contracts and the message catalogue: docs/architecture.rst and
:mod:`minicog.protocol`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Pipe
from typing import TYPE_CHECKING, Any, Callable, Optional

from minicog import protocol

if TYPE_CHECKING:
    from .engine import Engine, _Seat

__all__ = ["WorkerProcess", "describe_exit"]

log = logging.getLogger("minicog.orchestrator")
worker_log = logging.getLogger("minicog.worker")
#: The model's setup output, one record per line (the console shows it at INFO).
setup_log = logging.getLogger("minicog.setup")

# How often the I/O thread checks the process when no pidfd is available (seconds).
_POLL_INTERVAL = 0.5
# Seconds to wait for a process whose control channel closed to finish exiting.
_EXIT_WAIT = 5.0
# Seconds spent reading what a dead worker managed to send (a child of the model may
# still hold the channel open, so this is bounded).
_DRAIN_TIME = 2.0

_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
               "warn": logging.WARNING, "error": logging.ERROR}


def describe_exit(code: Optional[int]) -> str:
    """``exit code N`` / ``killed by signal SIGKILL`` (the texts of ``Worker crashed: ...``)."""
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


def call_listener(listener: Any, method: str, *args: Any) -> None:
    """Call a listener method; a listener bug is logged, never fatal to the I/O thread."""
    fn = getattr(listener, method, None)
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:
        log.exception("prediction listener %s() raised", method)


def _slot_poll(fd: int) -> Any:
    """A ``select.poll`` object watching *fd* for input (None where there is no poll)."""
    if not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poller


#: Held by the one thread of this process that spins for a worker's answer (drive()):
#: spinning burns a CPU, which several waiting threads would multiply.
_SPIN_GATE = threading.Lock()


class _Poller:
    """``select.epoll`` where there is one (registration changes made by another thread
    take effect during a wait, which drive() relies on), else ``select.poll``."""

    def __init__(self) -> None:
        self.live_changes = hasattr(select, "epoll")
        if self.live_changes:
            self._p: Any = select.epoll()
            self._mask = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
        else:
            self._p = select.poll()
            self._mask = select.POLLIN | select.POLLHUP | select.POLLERR

    def register(self, fd: int) -> None:
        self._p.register(fd, self._mask)

    def unregister(self, fd: int) -> None:
        self._p.unregister(fd)

    def poll(self, timeout: Optional[float]) -> list[int]:
        """The ready fds, waiting up to *timeout* seconds (None: no limit)."""
        if self.live_changes:
            events = self._p.poll(-1 if timeout is None else timeout + 0.001)
        else:
            events = self._p.poll(None if timeout is None else int(timeout * 1000) + 1)
        return [fd for fd, _ in events]

    def close(self) -> None:
        if self.live_changes:
            self._p.close()


class WorkerProcess:
    """One worker subprocess and its channels (a *generation* of a worker seat)."""

    def __init__(self, owner: "Engine", seat: "_Seat", number: int):
        self.owner = owner
        self.seat = seat
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
        self.recycling = False  # being replaced after reaching a recycling limit (not a crash)
        self.spawned_at = time.monotonic()
        self.runs_done = 0  # predictions that ended on this process (for worker_max_predictions)
        self.retiring: Optional[str] = None  # why it takes no new predictions (a recycling limit)
        self.stop_deadline: Optional[float] = None  # kill it if it has not exited by then
        self.fatal: Optional[str] = None
        self.exited = False
        self.rebuild = False  # the I/O thread must re-read the channel list
        self._spin = owner.settings.spin_window()  # see drive()
        # The last run a drive saw end took at most twice the spin window: spin for the
        # next one's answer too (a model that takes longer is waited for asleep).
        self._quick = True
        # One poller for the process's life (multiprocessing's wait() builds a selector
        # per call, which dominated the cost of a streamed item).  With epoll, another
        # thread can take a slot out of it while the I/O thread waits (see drive()).
        self._poller = _Poller()
        self._poll_lock = threading.Lock()
        self._watched: dict[int, tuple[Any, int]] = {}  # fd → (object, index) being polled
        self._gone: set[int] = set()  # indexes whose channel reached EOF
        self.driven: set[int] = set()  # slots the I/O thread leaves to waiting threads (drive())
        self.read_locks: list[threading.Lock] = []  # one per slot: one reader at a time
        # One poll object per slot for drive(): Connection.poll() builds a selector per call.
        self._slot_polls: list[Any] = []

    @property
    def pid(self) -> Optional[int]:
        return self.popen.pid if self.popen is not None and not self.exited else None

    # -- life cycle -----------------------------------------------------------------------
    def spawn(self, *, n_channels: int, cwd: str, env: dict[str, str], init: dict) -> Optional[str]:
        """Start the process, send ``init`` and start the I/O thread; an error text if it could not start."""
        control_parent, control_child = Pipe()
        pairs = [Pipe() for _ in range(n_channels)]
        child_conns = [control_child] + [child for _, child in pairs]
        argv = [sys.executable, "-m", "minicog.worker", "--control", str(control_child.fileno()),
                "--slots", ",".join(str(child.fileno()) for _, child in pairs)]
        try:
            self.popen = subprocess.Popen(argv, pass_fds=[c.fileno() for c in child_conns], cwd=cwd, env=env,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as exc:
            for conn in [control_parent, *child_conns, *(p for p, _ in pairs)]:
                conn.close()
            self.exited = True
            return f"cannot start the worker process: {exc}"
        for conn in child_conns:
            conn.close()
        self.control = protocol.Channel(control_parent, "control")
        self.slots = [protocol.Channel(p, f"slot {i}") for i, (p, _) in enumerate(pairs)]
        self.read_locks = [threading.Lock() for _ in pairs]
        self._slot_polls = [_slot_poll(p.fileno()) for p, _ in pairs]
        try:
            self.pidfd = os.pidfd_open(self.popen.pid)  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            self.pidfd = None
        self.wake_r, self.wake_w = Pipe(duplex=False)
        try:
            self.control.send(init)
        except (OSError, ValueError) as exc:
            log.error("cannot send init to the worker: %s", exc)  # its death is noticed by the I/O thread
        self.thread = threading.Thread(target=self._io_main, name=f"minicog-worker-{self.seat.index}-{self.number}",
                                       daemon=True)
        self.thread.start()
        return None

    def wake(self) -> None:
        """Make the I/O thread recompute its deadlines."""
        try:
            self.wake_w.send_bytes(b"")
        except (OSError, ValueError, AttributeError):
            pass

    def send_control(self, msg: dict) -> None:
        """Send on the control channel; a dead worker is noticed by the I/O thread."""
        try:
            if self.control is not None:
                self.control.send(msg)
        except (OSError, ValueError):
            pass

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            try:
                self.popen.kill()
            except OSError:
                pass

    def shutdown(self, timeout: float) -> None:
        """Send shutdown, kill after *timeout*, reap, and let the I/O thread finish."""
        if not self.ready:
            timeout = min(timeout, 1.0)  # setup is not interruptible: do not wait for it
        if not self.exited:
            self.send_control({"type": "shutdown"})
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not exit within %.1fs of shutdown; killing it", self.popen.pid, timeout)
                self.popen.kill()
                self.popen.wait()
        self.wake()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5.0)

    def close_slots_from(self, n: int) -> None:
        """(owner's lock held) Close the slot channels the worker will not serve."""
        for chan in self.slots[n:]:
            if chan is not None:
                chan.close()
        del self.slots[n:]
        self.rebuild = True

    def close_slot(self, index: int) -> None:
        """(owner's lock held) Close one broken slot channel for good."""
        if index < len(self.slots) and self.slots[index] is not None:
            self.slots[index].close()  # type: ignore[union-attr]
            self.slots[index] = None
            self.rebuild = True

    def _close(self) -> None:
        self._poller.close()
        for chan in [self.control, *self.slots]:
            if chan is not None:
                chan.close()
        for conn in (self.wake_r, self.wake_w):
            try:
                if conn is not None:
                    conn.close()
            except OSError:
                pass
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None

    def _reap(self) -> str:
        """Wait for the process (killing it if it lingers); the exit as ``Worker crashed: ...`` text."""
        assert self.popen is not None
        try:
            code = self.popen.wait(_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.popen.wait()
        self.exited = True
        desc = describe_exit(code)
        if self.fatal:
            desc += f" ({self.fatal})"
        return desc

    def _exits_soon(self) -> bool:
        assert self.popen is not None
        try:
            self.popen.wait(0.5)
            return True
        except subprocess.TimeoutExpired:
            return False

    # -- the I/O thread -------------------------------------------------------------------
    def _io_main(self) -> None:
        try:
            self._io_loop()
        except Exception:
            log.exception("engine I/O thread crashed; killing worker %s", self.popen.pid if self.popen else None)
            self.kill_reason = self.kill_reason or "the orchestrator's I/O thread crashed"
            self.kill()
            self.owner._worker_exited(self, self._reap())
        finally:
            self._close()

    def _io_loop(self) -> None:
        assert self.control is not None and self.popen is not None
        owner = self.owner
        self._rebuild_poller()
        while True:
            if self.rebuild:
                self._rebuild_poller()
            timeout = owner._next_deadline(self)
            if self.pidfd is None:
                timeout = _POLL_INTERVAL if timeout is None else min(timeout, _POLL_INTERVAL)
            events = self._poller.poll(timeout)
            with self._poll_lock:
                ready = [self._watched[fd] for fd in events if fd in self._watched]
            dead = False
            for obj, index in ready:
                if getattr(obj, "closed", False):
                    continue  # closed by the owner (ready, poisoned) after poll() returned
                if index == -2:
                    try:
                        while obj.poll():
                            obj.recv_bytes()
                    except (EOFError, OSError):
                        self._gone.add(-2)
                        self.rebuild = True
                    continue
                if index == -3:
                    dead = True
                    continue
                lock = self.read_locks[index] if index >= 0 else None
                if lock is not None and not lock.acquire(blocking=False):
                    continue  # a thread waiting on the run reads this slot now (see drive())
                try:
                    if lock is not None and not obj.poll(0):
                        continue  # that thread read it between our poll() and now
                    msg = protocol.recv(obj)
                except (EOFError, OSError, protocol.ProtocolError) as exc:
                    if lock is not None:
                        lock.release()
                        lock = None
                    self._gone.add(index)
                    self.rebuild = True
                    if index == -1:
                        dead = True
                    elif not self.ready:
                        pass  # the worker closes the channels it will not serve before ready
                    elif self._exits_soon():
                        dead = True  # the worker is exiting: its fds close before it is reaped
                    else:
                        owner._poison(self, index, f"Slot channel broken: {describe(exc)}")
                    continue
                else:
                    if index == -1:
                        self._on_control(msg)
                    else:
                        self._on_slot(index, msg)
                finally:
                    if lock is not None:
                        lock.release()
            if not dead and self.pidfd is None and self.popen.poll() is not None:
                dead = True
            if dead:
                # Read what the worker managed to send before it went away (its last log lines).
                drain_until = time.monotonic() + _DRAIN_TIME
                with self._poll_lock:
                    channels = [(obj, index) for obj, index in self._watched.values() if index >= -1]
                    driven = sorted(self.driven)
                # A thread driving its run's slot (drive()) reads up to the EOF and lets go:
                # wait for it, so the run's last frames (the lines printed before os._exit)
                # are dispatched before the run is failed below.  A slot taken for a
                # waiter that has not started reading yet is drained here, under its lock.
                for index in driven:
                    lock = self.read_locks[index] if index < len(self.read_locks) else None
                    if lock is not None and lock.acquire(timeout=max(0.0, drain_until - time.monotonic())):
                        try:
                            chan = self.slots[index] if index < len(self.slots) else None
                            if chan is not None and not chan.conn.closed:
                                self._drain(chan.conn, index, drain_until)
                        finally:
                            lock.release()
                for obj, index in channels:
                    self._drain(obj, index, drain_until)
                owner._worker_exited(self, self._reap())
                return
            owner._check_deadlines(self)
            if owner._stopping(self) and (self.exited or self.popen.poll() is not None):
                owner._worker_exited(self, self._reap())
                return

    def _drain(self, conn: Any, index: int, until: float) -> None:
        """Dispatch what a dead worker left on one channel (bounded by *until*)."""
        try:
            while time.monotonic() < until and conn.poll():
                msg = protocol.recv(conn)
                if index == -1:
                    self._on_control(msg)
                else:
                    self._on_slot(index, msg)
        except (EOFError, OSError, protocol.ProtocolError):
            pass

    def _wanted(self) -> dict[int, tuple[Any, int]]:
        """(owner's lock and poll lock held) fd → (object, index) the I/O thread should watch."""
        wanted: dict[int, tuple[Any, int]] = {}
        if -1 not in self._gone and self.control is not None:
            wanted[self.control.fileno()] = (self.control.conn, -1)
        if -2 not in self._gone and self.wake_r is not None:
            wanted[self.wake_r.fileno()] = (self.wake_r, -2)
        if self.pidfd is not None:
            wanted[self.pidfd] = (self.pidfd, -3)
        for i, chan in enumerate(self.slots):
            if chan is not None and i not in self._gone and i not in self.driven:
                wanted[chan.fileno()] = (chan.conn, i)
        return wanted

    def _rebuild_poller(self) -> None:
        """Make the poller watch what :meth:`_wanted` says (only the differences are applied)."""
        with self.owner._lock, self._poll_lock:
            self.rebuild = False
            wanted = self._wanted()
            for fd in [fd for fd in self._watched if fd not in wanted or wanted[fd][0] is not self._watched[fd][0]]:
                del self._watched[fd]
                try:
                    self._poller.unregister(fd)
                except (OSError, ValueError, KeyError):
                    pass  # closed meanwhile: a closed fd leaves the poller by itself
            for fd, entry in wanted.items():
                if fd not in self._watched:
                    self._poller.register(fd)
                    self._watched[fd] = entry

    # -- a waiting thread reads its run's slot itself --------------------------------------
    def take_slot(self, index: int) -> Optional[protocol.Channel]:
        """Stop the I/O thread watching slot *index*; the slot's channel, or None when it
        cannot be driven (no epoll, the slot or the process is gone).

        Called by :meth:`Engine.submit` before a request whose caller will wait for it
        is sent (then the answer can never wake the I/O thread), and by :meth:`drive`.
        A slot stays taken after a drive that saw its run end, so back-to-back sync
        requests change nothing in the poller; :meth:`give_slot` hands it back.
        """
        if not self._poller.live_changes:
            return None
        if index in self.driven and index not in self._gone and not self.exited:
            # Taken already (a sync submit takes it before sending): the common case of
            # drive(), without the lock.
            chan = self.slots[index] if index < len(self.slots) else None
            if chan is not None:
                return chan
        with self._poll_lock:
            chan = self.slots[index] if index < len(self.slots) else None
            if chan is None or index in self._gone or self.exited:
                return None
            self.driven.add(index)
            fd = chan.fileno()
            entry = self._watched.pop(fd, None)
            if entry is not None:
                try:
                    self._poller.unregister(fd)
                except (OSError, ValueError):
                    pass
        return chan

    def give_slot(self, index: int) -> None:
        """Hand slot *index* back to the I/O thread (a no-op if it watches it already)."""
        with self._poll_lock:
            if index not in self.driven:
                return
            self.driven.discard(index)
            chan = self.slots[index] if index < len(self.slots) else None
            if chan is None or index in self._gone or chan.conn.closed:
                return
            fd = chan.fileno()
            if fd not in self._watched:
                try:
                    self._poller.register(fd)
                    self._watched[fd] = (chan.conn, index)
                except (OSError, ValueError):
                    pass

    def drive(self, index: int, is_done: Callable[[], bool], timeout: Optional[float]) -> None:
        """Read slot *index* on this thread until *is_done()* or *timeout* (see Engine docs).

        The run's messages are decoded and dispatched here instead of on the I/O
        thread: a thread waiting for its run's answer gets it without a hand-off.
        Anything unusual (EOF, a closed channel) ends the drive; the I/O thread
        then deals with it as usual.  A drive that ends before the run does hands
        the slot back to the I/O thread.
        """
        lock = self.read_locks[index] if index < len(self.read_locks) else None
        if lock is None or not lock.acquire(timeout=0.05 if timeout is None else max(0.0, min(timeout, 0.05))):
            return
        try:
            chan = self.take_slot(index)
            if chan is None:
                return
            poller = self._slot_polls[index] if index < len(self._slot_polls) else None
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                spin = self._spin if self._quick else 0.0
                began = time.perf_counter()
                while not is_done():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return
                    ready = False
                    if poller is not None and spin and _SPIN_GATE.acquire(False):
                        # Poll without sleeping for the first moments (protocol.spin_poll):
                        # one thread of the process at a time, and once per drive.
                        spin = 0.0
                        try:
                            ready = protocol.spin_poll(poller, self._spin if left is None else min(left, self._spin))
                        finally:
                            _SPIN_GATE.release()
                        if left is not None:  # the spin took part of the time: never overrun it
                            left = max(0.0, deadline - time.monotonic())
                    if not ready:  # (a spin that saw the answer needs no second poll)
                        if poller is not None:
                            # Milliseconds, rounded up so a short wait never becomes a busy poll.
                            if not poller.poll(None if left is None else math.ceil(left * 1000)):
                                return
                        elif not chan.conn.poll(left):
                            return
                    # What the worker wrote at once is read at once (its output and end).
                    for msg in protocol.recv_available(chan.conn):
                        self._on_slot(index, msg)
            except (EOFError, OSError, ValueError, protocol.ProtocolError):
                return
            finally:
                done = is_done()
                if not done:
                    self.give_slot(index)
                if self._spin:
                    # Twice the window, as the worker judges its requests (worker.main).
                    waited = time.perf_counter() - began
                    if done or waited > 2 * self._spin:
                        self._quick = waited <= 2 * self._spin
        finally:
            lock.release()

    # -- message decoding -----------------------------------------------------------------
    def _on_control(self, msg: dict) -> None:
        kind = msg["type"]
        owner = self.owner
        if kind == "log":
            source, data = str(msg.get("source", "stdout")), str(msg.get("data", ""))
            if owner._setup_output(self, source, data):
                if setup_log.isEnabledFor(logging.INFO):  # the operator's console follows setup
                    for line in data.splitlines():
                        if line.strip():
                            setup_log.info("%s", line, extra={"source": source, "worker": self.seat.index})
            else:
                for line in data.splitlines():
                    if line.strip():
                        worker_log.warning("orphan %s: %s", source, line)
        elif kind == "worker_log":
            message = str(msg.get("message", ""))
            worker_log.log(_LOG_LEVELS.get(str(msg.get("level")), logging.INFO), "%s", message)
            owner._setup_output(self, "minicog", f"[minicog] {message}\n")
        elif kind == "schema":
            owner._worker_schema(self, msg.get("schema"))
        elif kind == "ready":
            owner._worker_ready(self, msg)
        elif kind == "setup_failed":
            owner._worker_setup_failed(self, str(msg.get("error") or "setup failed"))
        elif kind == "healthcheck_result":
            healthy = msg.get("status") == "healthy"
            owner._healthcheck_result(self, msg.get("id"),
                                      (True, None) if healthy else (False, str(msg.get("error") or "unhealthy")))
        elif kind == "dropped_logs":
            worker_log.warning("Log production exceeds consumption rate. %s logs dropped", msg.get("count"))
        elif kind == "fatal":
            self.fatal = str(msg.get("reason") or "")
            worker_log.error("worker fatal: %s", self.fatal)
        elif kind == "shutting_down":
            pass  # the process exit itself is what the I/O thread acts on
        else:
            log.warning("unexpected control message %r from the worker", kind)

    def _on_slot(self, index: int, msg: dict) -> None:
        kind = msg["type"]
        run = self.owner._run_on(self, index)
        if run is None:
            log.warning("message %r on idle slot %d ignored", kind, index)
            return
        listener = run.listener
        if kind == "log":
            call_listener(listener, "log", str(msg.get("source", "stdout")), str(msg.get("data", "")))
        elif kind == "output":
            call_listener(listener, "output", int(msg.get("index", 0)), msg.get("value"))
        elif kind == "output_file":
            path = str(msg.get("path"))
            try:
                with open(path, "rb") as f:
                    value = json.loads(f.read())
            except (OSError, ValueError) as exc:
                run.error = run.error or f"Failed to read spilled output: {exc}"
            else:
                call_listener(listener, "output", int(msg.get("index", 0)), value)
            finally:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        elif kind == "file":
            call_listener(listener, "file_output", int(msg.get("index", 0)), str(msg.get("path")), msg.get("mime"))
        elif kind == "metric":
            call_listener(listener, "metric", str(msg.get("name")), msg.get("value"), str(msg.get("mode") or "replace"))
        elif kind in protocol.TERMINAL:
            if msg.get("tmp") is False:
                run.folder = None  # the worker made nothing there: no folder to remove
            if "output" in msg and kind == "done":
                # A sync prediction's single output, carried by its end (one frame less).
                call_listener(listener, "output", 0, msg["output"])
            if kind == "canceled":
                outcome: tuple = ("canceled",)
            elif kind == "failed":
                outcome = ("failed", str(msg.get("error") or "Prediction failed"))
            else:
                outcome = ("succeeded", bool(msg.get("is_stream")))
            self.owner._run_ended(self, index, run, outcome)
        else:
            log.warning("unexpected slot message %r ignored", kind)
