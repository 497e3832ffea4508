"""What the engine calls for each run: the :class:`Listener` protocol (docs/architecture.rst)."""

from __future__ import annotations

from typing import Any, Optional, Protocol

__all__ = ["Listener"]


class Listener(Protocol):
    """Receives one run's events, in order, from the engine.

    ``started`` is called by :meth:`~minicog.engine.Engine.submit` on the caller's
    thread, before the request reaches the worker (or, for a run submitted without
    a listener, by :meth:`~minicog.engine.Run.attach`, after); every other method
    runs on a worker's I/O thread or on the thread waiting for the run, and must
    not block.  Exactly one of ``succeeded``, ``failed`` and ``canceled`` is
    called, last.
    """

    def started(self) -> None: ...

    def log(self, source: str, data: str) -> None: ...

    def output(self, index: int, value: Any) -> None: ...

    def file_output(self, index: int, path: str, mime: Optional[str]) -> None: ...

    def metric(self, name: str, value: Any, mode: str) -> None: ...

    def succeeded(self, is_stream: bool) -> None: ...

    def failed(self, error: str) -> None: ...

    def canceled(self) -> None: ...
