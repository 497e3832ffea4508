"""The one place that decides what to run and with how many slots and workers.

:func:`plan` is used by ``serve``, :class:`~minicog.server.service.Service`,
:class:`~minicog.embed.Model` and ``serve_in_thread``, so the four can never
disagree.  Rules (docs/architecture.rst, "Plan"):

* reference: the explicit one, else cog.yaml's ``predict``/``train`` in *cwd*,
  else ``COG_PREDICT_TYPE_STUB``/``COG_TRAIN_TYPE_STUB``, else the embedded model;
* slots per worker: ``Settings.max_concurrency`` (``COG_MAX_CONCURRENCY``, or
  ``--max-concurrency`` which the command line puts there), else the caller's
  *max_concurrency*, else cog.yaml ``concurrency.max``, else ``@concurrent`` as
  the worker reads it, else 1;
* workers: *workers* (a number or ``"auto"``), else ``MINICOG_WORKERS``, else 1;
  with *gpus* each worker gets one device (round robin) through
  ``CUDA_VISIBLE_DEVICES``, and so does ``"auto"`` when ``CUDA_VISIBLE_DEVICES``
  lists several devices.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional, Sequence, Union

from minicog.config import concurrency_from_cog_yaml
from minicog.settings import Settings

from .engine import Engine

__all__ = ["Plan", "plan", "parse_devices"]


def parse_devices(text: Optional[str]) -> list[str]:
    """``"0,1"`` → ``["0", "1"]`` (blanks dropped); the syntax of CUDA_VISIBLE_DEVICES and ``--gpus``."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the cores this process may use
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to run: ``ref``, ``mode``, ``cwd``, ``settings``, ``max_concurrency``
    (the engine's argument; ``settings.max_concurrency`` ranks above it),
    ``workers`` and ``devices`` (one ``CUDA_VISIBLE_DEVICES`` value per worker, or None)."""

    ref: str
    mode: str
    cwd: str
    settings: Settings
    max_concurrency: Optional[int]
    workers: int
    devices: Optional[tuple[str, ...]]
    env: Optional[dict] = None

    @property
    def slots_per_worker(self) -> Optional[int]:
        """The slot count if known before the worker reads ``@concurrent`` (else None)."""
        return self.settings.max_concurrency or self.max_concurrency

    def engine(self) -> Engine:
        """A new (not started) engine for this plan."""
        return Engine(self.ref, mode=self.mode, settings=self.settings, max_concurrency=self.max_concurrency,
                      cwd=self.cwd, env=self.env, workers=self.workers,
                      devices=list(self.devices) if self.devices is not None else None)


def plan(ref: Optional[str] = None, *, mode: str = "predict", cwd: Optional[str] = None,
         settings: Optional[Settings] = None, max_concurrency: Optional[int] = None,
         workers: Union[int, str, None] = None, gpus: Union[str, Sequence[str], None] = None,
         environ: Optional[Mapping[str, str]] = None, env: Optional[dict] = None) -> Plan:
    """Decide what to run (see the module docstring); raises ConfigError for a bad cog.yaml,
    LoadError when there is nothing to run, ValueError for bad *workers*/*gpus*."""
    from minicog.loader import resolve_ref  # imports no user code; kept lazy for start-up time

    if mode not in ("predict", "train"):
        raise ValueError(f"mode must be 'predict' or 'train', not {mode!r}")
    cwd = os.path.abspath(cwd or os.getcwd())
    environ = (os.environ if env is None else env) if environ is None else environ
    settings = settings if settings is not None else Settings.from_env(environ)
    ref = resolve_ref(ref, mode=mode, cwd=cwd, environ=environ)
    if max_concurrency is None and not settings.max_concurrency:
        max_concurrency = concurrency_from_cog_yaml(cwd)
    devices: Optional[list[str]] = None
    if gpus is not None:
        devices = parse_devices(gpus) if isinstance(gpus, str) else [str(g).strip() for g in gpus if str(g).strip()]
        if not devices:
            raise ValueError("--gpus: no device given")
    spec = workers if workers is not None else settings.workers
    if isinstance(spec, str) and spec.strip().lower() == "auto":
        if devices is None:
            visible = parse_devices(environ.get("CUDA_VISIBLE_DEVICES"))
            if len(visible) > 1:
                devices = visible
        count = len(devices) if devices is not None else _cpu_count()
    elif spec is None and devices is not None:
        count = len(devices)
    else:
        try:
            count = int(spec)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"workers must be a number or 'auto', not {spec!r}") from None
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        if workers is None and devices is not None and count == 1:
            count = len(devices)  # --gpus alone: one worker per device
    assigned = tuple(devices[i % len(devices)] for i in range(count)) if devices else None
    return Plan(ref=ref, mode=mode, cwd=cwd, settings=settings, max_concurrency=max_concurrency,
                workers=count, devices=assigned, env=env)
