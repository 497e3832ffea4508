"""Helpers for the engine/worker tests: a recording listener and a started engine.

(Test scaffolding only: the engine and worker under test are the real ones.)
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator, Optional

from minicog.engine import Engine
from minicog.settings import Settings
from support import predictor

TERMINAL = ("succeeded", "failed", "canceled")


class Recorder:
    """A listener that keeps every call, in order, and signals the terminal one."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.first_output = threading.Event()
        self.first_log = threading.Event()

    def _add(self, *event: Any) -> None:
        with self.lock:
            self.events.append(event)
        if event[0] == "output" or event[0] == "file_output":
            self.first_output.set()
        if event[0] == "log":
            self.first_log.set()
        if event[0] in TERMINAL:
            self.done.set()

    def started(self) -> None: self._add("started")
    def log(self, source: str, data: str) -> None: self._add("log", source, data)
    def output(self, index: int, value: Any) -> None: self._add("output", index, value)
    def file_output(self, index: int, path: str, mime: Optional[str]) -> None: self._add("file_output", index, path, mime)
    def metric(self, name: str, value: Any, mode: str) -> None: self._add("metric", name, value, mode)
    def succeeded(self, is_stream: bool) -> None: self._add("succeeded", is_stream)
    def failed(self, error: str) -> None: self._add("failed", error)
    def canceled(self) -> None: self._add("canceled")

    def wait(self, timeout: float = 20.0) -> tuple:
        assert self.done.wait(timeout), f"no terminal event within {timeout}s; got {self.events[-5:]}"
        return self.terminal

    @property
    def terminal(self) -> tuple:
        return next(e for e in self.events if e[0] in TERMINAL)

    def logs(self, source: Optional[str] = None) -> str:
        with self.lock:
            return "".join(e[2] for e in self.events if e[0] == "log" and (source is None or e[1] == source))

    def outputs(self) -> list:
        with self.lock:
            return [e[2] for e in self.events if e[0] == "output"]



class ThreadRecorder(Recorder):
    """A recorder that also notes which thread made each call."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def _add(self, *event) -> None:
        with self.lock:
            self.threads.append(threading.get_ident())
        super()._add(*event)

    def terminal_thread(self) -> int:
        """The thread the terminal call came on."""
        with self.lock:
            return next(t for t, e in zip(self.threads, self.events) if e[0] in ("succeeded", "failed", "canceled"))


class Gate(Recorder):
    """A recorder that holds the engine's I/O thread inside its *hold* calls
    (``"log"`` or ``"output"``) until ``release`` is set: the parent stops reading, so
    tests can stage what the worker does meanwhile (backpressure, spills, late cancels)."""

    def __init__(self, hold: str = "log", timeout: float = 20.0) -> None:
        super().__init__()
        self.release = threading.Event()
        self._hold, self._timeout = hold, timeout

    def log(self, source: str, data: str) -> None:
        super().log(source, data)
        if self._hold == "log":
            assert self.release.wait(self._timeout)

    def output(self, index: int, value: Any) -> None:
        super().output(index, value)
        if self._hold == "output":
            assert self.release.wait(self._timeout)

@contextlib.contextmanager
def running(name: str, *, ready: bool = True, timeout: float = 30.0, workers: int = 1,
            devices: Optional[list] = None, **settings: Any) -> Iterator[Engine]:
    """An engine serving tests/predictors/<name>, stopped (and reaped) afterwards."""
    max_concurrency = settings.pop("max_concurrency_arg", None)
    env = settings.pop("env", None)
    if env is not None:
        env = {**os.environ, **env}
    orch = Engine(predictor(name), settings=Settings(**settings), max_concurrency=max_concurrency, env=env,
                  workers=workers, devices=devices)
    orch.start()
    try:
        if ready:
            assert orch.wait_ready(timeout), f"state {orch.state}: {orch.setup.logs}"
        yield orch
    finally:
        orch.stop(timeout=5)


def predict(orch: Engine, prediction_id: str, inp: dict, timeout: float = 20.0, **kw: Any) -> Recorder:
    rec = Recorder()
    orch.submit(prediction_id, inp, rec, **kw)
    rec.wait(timeout)
    return rec
