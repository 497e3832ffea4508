"""The engine: the parent side of the worker protocol (docs/architecture.rst, "Engine").

* :class:`Engine` (facade; ``Orchestrator`` is its older name): workers, slots,
  states, restarts, ``submit``/``cancel``/``healthcheck``/``stop``;
* :class:`Run`: the handle ``submit`` returns, one owner per run;
* :class:`Listener`: what the engine calls for a run (a ``typing.Protocol``);
* :mod:`.process`: one worker process and its I/O thread;
* :mod:`.rules`: run rules shared by every run record (metrics, output shape, statuses);
* :func:`plan`: what to run, with how many slots and workers.
"""

from .engine import STATES, DuplicateRun, Engine, SetupInfo
from .listener import Listener
from .plan import Plan, plan
from .run import Run

Orchestrator = Engine

__all__ = ["Engine", "Orchestrator", "Run", "Listener", "SetupInfo", "STATES", "DuplicateRun", "Plan", "plan"]
