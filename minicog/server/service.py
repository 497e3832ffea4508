"""The service: engine + prediction records + HTTP server + probes + shutdown.

:class:`Service` owns one :class:`~minicog.engine.Engine` (the workers), one
:class:`~minicog.server.http.HTTPServer` (its selector thread holds the
connections; a bounded pool of threads answers requests), the webhook
dispatcher and the optional uploader.  It is what the HTTP
handlers call (:class:`~minicog.server.http.App`), and what the embedding API
runs in a thread (``Service(...).start()`` → port, ``.stop()``).  :func:`serve`
is the command line's entry point: it adds logging set-up and signal handling.

Predictions in flight
    The service keeps no map of its own: the engine's runs are the one place
    (each :class:`~minicog.engine.Run` carries its record as listener).  A record
    is in flight from ``submit`` until its terminal transition, and a ``PUT`` (or
    a ``POST`` with a body ``id``) naming a prediction in flight gets that
    prediction back instead of running it twice; the engine checks and inserts under one lock
    (:class:`~minicog.engine.DuplicateRun`), so two racing PUTs cannot both
    start it.  A record's run is released (its folder removed) once the record
    says nobody needs its files any more (see :mod:`minicog.server.prediction`).

Finished predictions
    Kept readable for ``Settings.retention_seconds`` (at most
    ``retention_max_records``, oldest dropped first), each holding a reference
    on its record so its output files stay as long as it does: ``GET
    /predictions/{id}`` answers it, a ``PUT``/``POST`` of its id returns it
    (coglet forgets a prediction when it ends and would run it again), SSE
    reattaches replay its events.  A record is retained by its first done
    callback, before any answer is sent; the monitor thread forgets expired
    ones twice a second (removing files never runs on the engine's I/O thread),
    and a shutdown forgets them all.

Health (``GET /health-check``)
    ``STARTING`` (setup running, also while a crashed worker is being set up
    again), ``READY``, ``BUSY`` (no free slot), ``UNHEALTHY`` (the model's
    ``healthcheck()`` failed; wins over BUSY; ``user_healthcheck_error`` says
    why), ``SETUP_FAILED`` (``setup.logs`` ends with the error), ``DEFUNCT``
    (the worker kept dying), and ``DRAINING`` from the moment a shutdown starts
    - a value coglet does not have, chosen so that any client that waits for
    ``READY`` stops sending work.  The ``version`` block cannot carry coglet's
    ``coglet`` key honestly; it has ``minicog``, ``python_sdk`` (the Cog SDK
    version we implement, which is what Cog clients compare) and ``python``.

Readiness file
    When ``KUBERNETES_SERVICE_HOST`` is set (``Settings.kubernetes_service_host``),
    ``Settings.readiness_file`` is created once the model is READY (and on each
    READY/BUSY health check, as coglet does) and removed as soon as draining
    starts or the worker leaves READY (crash, respawn), so an ``exec`` readiness
    probe (``test -f``) takes the pod out of the Service at once.

Shutdown (:meth:`Service.stop`)
    SIGTERM, SIGINT and ``POST /shutdown`` only *request* a shutdown (signal
    handlers set a flag; :func:`serve`'s main loop acts).  Then: draining starts
    (health says DRAINING, new predictions get 503 with Retry-After, the
    readiness file goes); predictions in flight get until
    ``Settings.shutdown_grace_period`` to finish, and are canceled after that;
    terminal webhooks still pending are waited for within the same grace period
    and the ones that could not be delivered are logged by prediction id and URL
    (coglet drops them silently); responses still being written are let finish;
    then the HTTP server closes and the worker is stopped.  The drain's first
    log line says what it waits for and (under :func:`serve`) how to stop at
    once: a second SIGINT/SIGTERM cancels what still runs (waiting at most
    2 s for the cancels to land), does not wait for webhooks (each one left
    is logged by prediction id, or stays in the outbox when there is one),
    gives the worker 1 s, and exits.  With ``await_explicit_shutdown``,
    SIGTERM is ignored (logged) and only ``POST /shutdown`` or SIGINT stop the
    server.
"""

from __future__ import annotations

import collections
import datetime
import gc
import logging
import os
import platform
import signal
import sys
import threading
import time
from typing import Any, Optional, Sequence

from minicog._version import COG_VERSION, __version__
from minicog.console import JSONFormatter, configure_logging
from minicog.engine import DuplicateRun, Engine, plan
from minicog.errors import AtCapacity, InputValidationError, ServiceUnavailable
from minicog.server.http import HTTPServer, PredictionRequest
from minicog.server.deadlines import format_duration
from minicog.server.metrics import Metrics
from minicog.server.outputs import Uploader
from minicog.server.prediction import Prediction
from minicog.server.sse import EventStream
from minicog.server.timers import Timer, TimerPool
from minicog.server.webhooks import WebhookDispatcher
from minicog.settings import Settings
from minicog.validation import redact_input, validate_input

__all__ = ["Service", "serve", "configure_logging", "JSONFormatter"]

log = logging.getLogger("minicog.server")

_DRAINING_MESSAGE = "The server is shutting down and accepts no new predictions."
#: Seconds a forced stop (second signal) waits for canceled predictions to confirm.
_FORCED_CANCEL_WAIT = 2.0
#: Seconds a forced stop gives the worker to exit before it is killed.
_FORCED_WORKER_STOP = 1.0


def _rfc3339(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.astimezone(datetime.timezone.utc).isoformat()
    return str(value)


class _IdSource:
    """``pred_`` + lowercase hex of nanoseconds since the epoch (Cog), never repeated."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def __call__(self) -> str:
        with self._lock:
            now = max(time.time_ns(), self._last + 1)
            self._last = now
        return f"pred_{now:x}"


class Service:
    """One model served over HTTP; see the module docstring and docs/architecture.rst."""

    def __init__(self, ref: Optional[str] = None, *, settings: Optional[Settings] = None, host: Optional[str] = None,
                 port: Optional[int] = None, upload_url: Optional[str] = None, mode: str = "predict",
                 max_concurrency: Optional[int] = None, await_explicit_shutdown: bool = False,
                 cwd: Optional[str] = None, env: Optional[dict[str, str]] = None,
                 orchestrator: Optional[Engine] = None, workers: Any = None, gpus: Any = None):
        self.settings = settings if settings is not None else Settings.from_env()
        if orchestrator is None:
            # What to run and with how many slots/workers: the same rules as the command line.
            orchestrator = plan(ref, mode=mode, cwd=cwd, settings=self.settings, max_concurrency=max_concurrency,
                                workers=workers, gpus=gpus, env=env).engine()
        # An engine may be handed in already started: the command line spawns the
        # workers before importing the HTTP machinery, so the two start-ups overlap.
        self.orchestrator = self.engine = orchestrator
        self.ref = orchestrator.ref
        self.mode = orchestrator.mode
        self.host = host if host is not None else self.settings.host
        self._requested_port = port if port is not None else self.settings.port
        self.upload_url = upload_url
        self.await_explicit_shutdown = await_explicit_shutdown
        #: Counters and histograms for GET /metrics (recorded even when the route is off: it is cheap).
        self.metrics = Metrics()
        self.webhooks = WebhookDispatcher(self.settings, on_attempt=self.metrics.webhook_attempt)
        #: Deadlines (Cancel-After, MINICOG_DEFAULT_DEADLINE) and Prefer: wait answers.
        self.timers = TimerPool("minicog-timer", self.settings.timer_threads, self.settings.webhook_pool_idle_timeout)
        self._deadlines: dict[int, Timer] = {}  # id(record) → its deadline's timer, until it ends
        self.uploader = Uploader(upload_url, timeout=self.settings.upload_timeout) if upload_url else None
        self.port: Optional[int] = None
        self.url: Optional[str] = None
        self._server: Optional[HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._monitor: Optional[threading.Thread] = None
        # Notified at each record's terminal transition and release while the drain waits
        # on it (_drain_waiters > 0; it also looks every 0.1 s, so a notify is never needed
        # for correctness: without waiters the two per prediction are skipped).
        self._lock = threading.Condition(threading.Lock())
        self._drain_waiters = 0
        self._new_id = _IdSource()
        #: Finished records kept readable, oldest first: id → (monotonic end time, record).
        #: Each holds a reference (Prediction.retain) so its output files stay until it goes.
        self._finished: "collections.OrderedDict[str, tuple[float, Prediction]]" = collections.OrderedDict()
        self._draining = False
        # Held while the readiness file is made or removed and while draining starts, so
        # a health check that read "not draining" cannot recreate the file after the drain
        # removed it (seen under load: the file stayed while health said DRAINING).
        self._readiness_lock = threading.Lock()
        self._shutdown_requested = threading.Event()
        self._stopped = threading.Event()
        self._stopping = False
        self._closed = threading.Event()
        #: Set (e.g. by a second signal) to cut the shutdown waits short.
        self.force_stop = False
        #: How to stop at once, said when a drain starts (serve() sets it: it owns the signals).
        self.stop_hint: Optional[str] = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        """Bind, start the HTTP thread and the worker; return the port (setup goes on)."""
        self._server = HTTPServer((self.host, self._requested_port), self, self.settings)
        self.port = self._server.server_address[1]
        shown = self.host if ":" not in self.host else f"[{self.host}]"
        self.url = f"http://{'127.0.0.1' if self.host in ('0.0.0.0', '') else shown}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="minicog-http", daemon=True)
        self._thread.start()
        if not self.orchestrator.started:
            self.orchestrator.start()
        # Terminal webhooks a previous process left in the outbox go out again now.
        self.webhooks.start()
        self._monitor = threading.Thread(target=self._watch, name="minicog-monitor", daemon=True)
        self._monitor.start()
        threading.Thread(target=self._await_shutdown_request, name="minicog-shutdown", daemon=True).start()
        log.info("minicog %s serving %s (%s mode) on http://%s:%d", __version__, self.ref, self.mode, shown, self.port)
        return self.port

    def wait_ready(self, timeout: Optional[float] = None) -> bool:
        return self.orchestrator.wait_ready(timeout)

    def request_shutdown(self) -> None:
        """Ask for a graceful shutdown (what POST /shutdown does); a service thread then runs stop()."""
        self._shutdown_requested.set()

    def wait_shutdown_requested(self, timeout: Optional[float] = None) -> bool:
        return self._shutdown_requested.wait(timeout)

    @property
    def draining(self) -> bool:
        return self._draining

    def __enter__(self) -> "Service":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _await_shutdown_request(self) -> None:
        """POST /shutdown stops an embedded service too (serve()'s loop may get there first)."""
        while not self._stopped.is_set():
            if self._shutdown_requested.wait(0.25):
                self.stop()
                return

    def _watch(self) -> None:
        """Follow the worker's state: log it and keep the readiness file in step."""
        orch = self.orchestrator
        last = None
        while not self._stopped.is_set():
            state = orch.wait_state(lambda s: s != last, timeout=0.5)
            self._evict_finished()  # here, not on the engine's I/O thread: evicting removes files
            if state == last:
                continue
            if state == "READY":
                log.info("ready: setup %s in %s", orch.setup.status, self._setup_duration())
            elif state == "SETUP_FAILED":
                log.error("setup failed: %s", orch.setup.error)
            elif state == "DEFUNCT":
                log.error("the worker keeps dying; the model is DEFUNCT")
            elif state == "STARTING" and last is not None:
                log.warning("the worker is being set up again")
            last = state
            self._sync_readiness(state == "READY" and not self._draining)

    def _setup_duration(self) -> str:
        s = self.orchestrator.setup
        if s.started_at and s.completed_at:
            return f"{(s.completed_at - s.started_at).total_seconds():.3f}s"
        return "?"

    def _sync_readiness(self, ready: bool) -> None:
        if not self.settings.kubernetes_service_host:
            return
        with self._readiness_lock:
            self._sync_readiness_locked(ready and not self._draining)

    def _sync_readiness_locked(self, ready: bool) -> None:
        path = self.settings.readiness_file
        try:
            if ready:
                if not os.path.exists(path):
                    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                    with open(path, "w"):
                        pass
            elif os.path.exists(path):
                os.unlink(path)
        except OSError as exc:
            log.warning("cannot update the readiness file %s: %s", path, exc)

    def stop(self, timeout: Optional[float] = None) -> None:
        """Drain and stop (see "Shutdown" in the module docstring); idempotent."""
        with self._lock:
            first = not self._stopping
            self._stopping = True
        if not first:
            self._closed.wait(timeout if timeout is not None else self.settings.shutdown_grace_period + 30)
            return
        try:
            self._drain(self.settings.shutdown_grace_period if timeout is None else timeout)
        finally:
            self._stopped.set()
            if self._server is not None:
                self._server.shutdown()
                self._server.server_close()
            # Stopped at once (second signal): the worker gets a short while, not the usual 10 s.
            self.orchestrator.stop(_FORCED_WORKER_STOP if self.force_stop else None)
            self.webhooks.close()
            self.timers.close()
            if self.uploader is not None:
                self.uploader.close()
            self._sync_readiness(False)
            self._closed.set()
            log.info("stopped")

    def _drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        with self._readiness_lock:
            # The file goes first, in the same step: whoever sees "draining" (read without
            # the lock) never finds the readiness file any more.
            if self.settings.kubernetes_service_host:
                self._sync_readiness_locked(False)
            self._draining = True
        n = len(self._unfinished())
        hooks = len(self.webhooks.pending())
        if n or hooks:
            log.info("shutting down: %d prediction(s) in flight, %d terminal webhook(s) pending; draining for up "
                     "to %gs (no new predictions; running ones finish, webhooks are delivered)%s", n, hooks, grace,
                     f". {self.stop_hint}" if self.stop_hint else "")
        else:
            log.info("shutting down: nothing in flight")

        def wait_for(predicate: Any, until: float, *, forced_too: bool = False) -> bool:
            with self._lock:
                self._drain_waiters += 1
                try:
                    while not predicate():
                        left = until - time.monotonic()
                        if left <= 0 or (self.force_stop and not forced_too):
                            return predicate()
                        self._lock.wait(min(left, 0.1))
                    return True
                finally:
                    self._drain_waiters -= 1

        if not wait_for(lambda: not self._unfinished(), deadline):
            left = [p.id for p in self._unfinished()]
            if self.force_stop:
                log.warning("stopping at once (second signal): canceling %d prediction(s) still running: %s",
                            len(left), ", ".join(left))
            else:
                log.warning("shutdown: canceling %d prediction(s) still running after the grace period: %s",
                            len(left), ", ".join(left))
            for pid in left:
                self.cancel(pid)
            # Let the cancels land (bounded), so clients and webhooks see "canceled", not
            # "Worker stopped"; even a forced stop waits this short while.
            limit = min(self.settings.cancel_grace_period, _FORCED_CANCEL_WAIT if self.force_stop else 5.0)
            wait_for(lambda: not self._unfinished(), time.monotonic() + limit, forced_too=True)
        elif self.force_stop:
            log.warning("stopping at once (second signal)")
        remaining = 0.0 if self.force_stop else max(0.0, deadline - time.monotonic())
        self._evict_finished(everything=True)  # nobody can read them back after the stop
        self.webhooks.flush(remaining)  # logs each terminal webhook left, by prediction id
        # Let responses and SSE readers of finished predictions write their last bytes.
        wait_for(lambda: not self._writers_pending(), time.monotonic() + min(max(remaining, 1.0), 5.0))

    def _writers_pending(self) -> bool:
        # Records still held only by webhook senders that flush() gave up on do not count.
        pending = {s.prediction_id for s in self.webhooks.pending()}
        return any(run.id not in pending for run in self.engine.open_runs())

    def _unfinished(self) -> list[Prediction]:
        """Records not terminal yet (running, or waiting for their uploads)."""
        listeners = [run.listener_now() for run in self.engine.open_runs()]
        return [p for p in listeners if isinstance(p, Prediction) and not p.is_terminal]

    # ------------------------------------------------------------------ App protocol
    def discovery(self) -> dict:
        doc = {
            "cog_version": COG_VERSION,
            "docs_url": "/docs",
            "healthcheck_url": "/health-check",
            "openapi_url": "/openapi.json",
            "predictions_cancel_url": "/predictions/{prediction_id}/cancel",
            "predictions_idempotent_url": "/predictions/{prediction_id}",
            "predictions_url": "/predictions",
            "shutdown_url": "/shutdown",
        }
        schema = self.orchestrator.schema or {}
        if "TrainingInput" in ((schema.get("components") or {}).get("schemas") or {}):
            doc.update(trainings_url="/trainings", trainings_idempotent_url="/trainings/{training_id}",
                       trainings_cancel_url="/trainings/{training_id}/cancel")
        return doc

    def health(self) -> dict:
        orch = self.orchestrator
        state = orch.state
        body: dict[str, Any] = {}
        error = None
        if self._draining or state == "STOPPED":
            status = "DRAINING"
        elif state == "READY":
            ok, error = orch.healthcheck()
            if not ok:
                status = "UNHEALTHY"
            elif orch.free_slots == 0:
                status = "BUSY"
            else:
                status = "READY"
            self._sync_readiness(status in ("READY", "BUSY") and not self._draining)
        else:
            status = state  # STARTING, SETUP_FAILED, DEFUNCT
            self._sync_readiness(False)
        body["status"] = status
        setup = orch.setup
        if setup.started_at is not None:
            block: dict[str, Any] = {"started_at": _rfc3339(setup.started_at)}
            if setup.completed_at is not None:
                block["completed_at"] = _rfc3339(setup.completed_at)
            block["status"] = setup.status
            logs = setup.logs
            if logs:
                block["logs"] = logs
            body["setup"] = block
        if status == "UNHEALTHY" and error:
            body["user_healthcheck_error"] = error
        # minicog's addition: each worker's own state (several workers: --workers).
        body["workers"] = orch.worker_states()
        body["version"] = {"minicog": __version__, "python_sdk": COG_VERSION, "python": platform.python_version()}
        return body

    def metrics_text(self) -> Optional[str]:
        """The Prometheus exposition text for GET /metrics, or None when metrics are off."""
        if not self.settings.metrics_enabled:
            return None
        orch = self.orchestrator
        setup = orch.setup
        setup_seconds = None
        if setup.started_at is not None and setup.completed_at is not None:
            setup_seconds = (setup.completed_at - setup.started_at).total_seconds()
        in_flight = len(self._unfinished())
        return self.metrics.render(in_flight=in_flight, slots=orch.num_slots or 0, free_slots=orch.free_slots,
                                   webhooks_pending=len(self.webhooks.pending()), setup_seconds=setup_seconds,
                                   restarts=getattr(orch, "restarts", None))

    def openapi(self) -> Optional[dict]:
        return self.orchestrator.schema

    def streaming_supported(self, kind: str) -> bool:
        return kind == "prediction" and bool(self.orchestrator.streaming)

    def find_inflight(self, prediction_id: str) -> Optional[Prediction]:
        """The record of the prediction in flight with this id (not terminal yet), or None."""
        run = self.engine.find(prediction_id)
        listener = None if run is None else run.listener_now()  # (a run just submitted: its record comes)
        if isinstance(listener, Prediction):
            return listener
        # The worker is done but the record still waits for its uploads.
        for pred in self._unfinished():
            if pred.id == prediction_id:
                return pred
        return None

    def find(self, prediction_id: str) -> Optional[Prediction]:
        """The record in flight with this id, else the finished one still retained, else None."""
        pred = self.find_inflight(prediction_id)
        if pred is None:
            pred = self.find_finished(prediction_id)
        if pred is None and self.settings.retention_seconds > 0 and self.settings.retention_max_records > 0:
            # Just ended: its done callbacks (which retain it) may still be running, and the
            # engine's run stays open until its files are released; the newest such record.
            ended = [p for p in (run.listener_now() for run in self.engine.open_runs() if run.id == prediction_id)
                     if isinstance(p, Prediction)]
            pred = max(ended, key=lambda p: p.created_mono, default=None)
        return pred

    def find_finished(self, prediction_id: str) -> Optional[Prediction]:
        """The finished record with this id if it is still retained (see ``Settings.retention_seconds``)."""
        with self._lock:
            entry = self._finished.get(prediction_id)
        if entry is None or time.monotonic() - entry[0] > self.settings.retention_seconds:
            return None
        return entry[1]

    def _retain_finished(self, pred: Prediction) -> None:
        """(engine I/O thread) Keep *pred* readable; never blocks (eviction runs elsewhere)."""
        s = self.settings
        if s.retention_seconds <= 0 or s.retention_max_records <= 0 or self._stopping:
            return
        if not pred.retain():  # its files are gone already: nothing to keep
            return
        with self._lock:
            previous = self._finished.pop(pred.id, None)
            self._finished[pred.id] = (time.monotonic(), pred)
        if previous is not None and previous[1] is not pred:
            # The id was reused (it was not in flight, e.g. retention is off for a moment):
            # the newer run is the one to read back; the older one's files can go.
            self._release_later([previous[1]])

    def _evict_finished(self, everything: bool = False) -> None:
        """Forget finished records past their time or beyond the count (oldest first).

        The monitor thread calls it twice a second, so the count may be exceeded by
        what finishes in that half second; the engine's I/O thread never waits for it.
        """
        s = self.settings
        now = time.monotonic()
        gone: list[Prediction] = []
        with self._lock:
            while self._finished:
                pid, (ended, pred) = next(iter(self._finished.items()))
                if not (everything or now - ended > s.retention_seconds or len(self._finished) > s.retention_max_records):
                    break
                del self._finished[pid]
                gone.append(pred)
        for pred in gone:
            pred.release()

    def _release_later(self, preds: list[Prediction]) -> None:
        threading.Thread(target=lambda: [p.release() for p in preds], name="minicog-release", daemon=True).start()

    def _stream_output(self) -> bool:
        schema = self.orchestrator.schema or {}
        schemas = (schema.get("components") or {}).get("schemas") or {}
        out = schemas.get("TrainingOutput" if self.mode == "train" else "Output") or {}
        return out.get("type") == "array"

    def call_later(self, delay: float, fn: Any) -> Optional[Timer]:
        """Run *fn* in *delay* seconds on the service's timer pool (no thread waits meanwhile)."""
        return self.timers.call_later(delay, fn)

    def create(self, kind: str, req: PredictionRequest, *, sse: bool, headers: dict[str, str],
               put: bool = False, deadline: Optional[float] = None,
               since: Optional[float] = None, wait: bool = False) -> tuple[Prediction, bool]:
        """Start a prediction, or return the one in flight with the same id (created=False).

        A new record comes with one reference (:meth:`Prediction.retain`) taken for
        the caller before it is submitted, so its files cannot be released before the
        caller has answered; the caller gives it back with ``release()``.

        The request's spooled data: URI inputs (:mod:`.spool`) go to the new record,
        which deletes their files when it is released; in every other outcome they
        are deleted here.

        *deadline*: seconds (``Cancel-After``; else ``Settings.default_deadline``) from
        *since* (the request's arrival, ``time.monotonic()``; default now: a request that
        waited for a slot counts from its arrival) after which the prediction is
        canceled, or not started if it is not running yet.

        *wait*: the caller reads the new record's run on its own thread next (a sync
        request's :meth:`Prediction.wait`, an SSE request's ``Run.read_until``; see
        :meth:`Engine.submit`).
        """
        spooled = getattr(req, "spooled", None) or []
        if not spooled:
            return self._create(kind, req, sse=sse, headers=headers, put=put, deadline=deadline, since=since,
                                wait=wait)
        from minicog.server import spool

        try:
            self._unspool_non_file_inputs(kind, req)
            pred, created = self._create(kind, req, sse=sse, headers=headers, put=put, deadline=deadline,
                                         since=since, wait=wait)
        except BaseException:
            spool.release(spooled)
            raise
        if not created or not pred.spooled:  # not taken by a record (another run, never started)
            spool.release(spooled)
        return pred, created

    def _unspool_non_file_inputs(self, kind: str, req: PredictionRequest) -> None:
        """A spooled value given to an input that is not a file input (a ``str``
        parameter, or any input when there is no schema) gets its string back."""
        from minicog.server import spool
        from minicog.server.outputs import DataURIInput

        schema = self.orchestrator.schema or {}
        schemas = (schema.get("components") or {}).get("schemas") or {}
        root = schemas.get("TrainingInput" if kind == "training" else "Input") or schemas.get("Input") or {}
        props = root.get("properties") or {}
        for name, value in list(req.input.items()):
            prop = props.get(name) if isinstance(props.get(name), dict) else {}
            is_file = prop.get("format") == "uri" or (isinstance(prop.get("items"), dict)
                                                      and prop["items"].get("format") == "uri")
            if is_file:
                continue
            if isinstance(value, DataURIInput):
                req.input[name] = value.text()
                spool.release([value])
            elif isinstance(value, list) and any(isinstance(v, DataURIInput) for v in value):
                spool.release([v for v in value if isinstance(v, DataURIInput)])
                req.input[name] = [v.text() if isinstance(v, DataURIInput) else v for v in value]

    def _create(self, kind: str, req: PredictionRequest, *, sse: bool, headers: dict[str, str],
                put: bool = False, deadline: Optional[float] = None,
                since: Optional[float] = None, wait: bool = False) -> tuple[Prediction, bool]:
        accepted = time.monotonic() if since is None else since
        if deadline is None:
            deadline = self.settings.default_deadline
        if req.id is not None:
            # In flight, or finished and still retained: that prediction, never a second run.
            existing = self.find(req.id)
            if existing is not None:
                return existing, False
        schema = self.orchestrator.schema
        value = req.input
        component = "TrainingInput" if kind == "training" else "Input"
        if schema is not None:
            result = validate_input(schema, req.input, component=component)
            if result.errors:
                raise InputValidationError(result.errors)
            value = result.value
        elif not isinstance(value, dict):
            result = validate_input({}, value)
            raise InputValidationError(result.errors)
        if self._draining:
            raise ServiceUnavailable(_DRAINING_MESSAGE)
        if self.engine.full() and (deadline is None or time.monotonic() < accepted + deadline):
            # Every slot busy: 409 now (after validation, as Cog orders them), before the
            # record, its webhook sender and the worker's frame are built for nothing.
            # (A request already past its deadline still ends as a canceled record.)
            raise AtCapacity()
        pid = req.id or self._new_id()
        if wait and not sse and not req.webhook and not getattr(req, "spooled", None) \
                and (deadline is None or time.monotonic() < accepted + deadline):
            return self._create_waited(kind, req, pid, value, schema, component, deadline, accepted)
        pred = self._new_record(kind, pid, value, schema, component)
        pred.cancel_on_disconnect = sse
        if sse and pred.events is not None:
            # The reader exists before the run does: once submitted, a fast model's tokens
            # keep the engine's I/O thread (and the GIL) busy, and a request that subscribed
            # only after create() returned waited milliseconds for its first token.
            pred.creator_reader = pred.events.subscribe()
        if req.webhook:
            pred.retain()  # the sender's reference, given back when the terminal webhook is done
            pred.webhook = self.webhooks.sender(req.webhook, pid, events_filter=req.events_filter, headers=headers,
                                                on_finished=pred.release)
        pred.retain()  # the caller's reference (see the docstring)
        if deadline is not None and time.monotonic() >= accepted + deadline:
            # Past its deadline before it could start: never started (Replicate says "aborted";
            # Cog's statuses have no such word, so it ends canceled without a start).
            log.info("%s %s: its deadline (%s) passed before it could start; not started", kind, pid,
                     format_duration(deadline))
            pred.log("stderr", f"[minicog] deadline ({format_duration(deadline)}) passed before the prediction started\n")
            pred.canceled()
            return pred, True
        try:
            files = None
            if getattr(req, "spooled", None):
                from minicog.server import spool

                pred.spooled = spool.spooled_in(value)  # deleted with the record (_on_release)
                files = spool.input_files(value)
            pred.attach(self.engine.submit(pid, value, pred, context=req.context, wait=wait,
                                           **({"input_files": files} if files else {})))
        except DuplicateRun as exc:
            # Another request started this id meanwhile (two racing PUTs): answer with that one.
            if pred.webhook is not None:
                pred.webhook.close()
            listener = exc.run.listener_now()
            if isinstance(listener, Prediction):
                return listener, False
            raise
        except BaseException:
            if pred.webhook is not None:
                pred.webhook.close()
            raise
        if deadline is not None:
            self._arm_deadline(pred, deadline, accepted)
        return pred, True

    def _new_record(self, kind: str, pid: str, value: Any, schema: Optional[dict], component: str,
                    run: Optional[Any] = None) -> Prediction:
        """A new record, retained once it ends (its first done callback)."""
        events = None
        if kind == "prediction" and self.orchestrator.streaming:  # readers may follow any of its predictions
            s = self.settings
            events = EventStream(history=s.stream_history_capacity, queue_size=s.stream_subscriber_queue,
                                 max_subscribers=s.max_stream_subscribers)
        # The record keeps only the redacted input: every echo of it (PUT in flight,
        # webhooks, SSE, reads of a kept record) goes through this one point.
        pred = Prediction(pid, redact_input(schema, value, component=component), kind=kind, settings=self.settings,
                          stream_output=self._stream_output(), events=events, uploader=self.uploader,
                          on_terminal=self._on_terminal, on_release=self._on_release, run=run)
        # First of the record's done callbacks, so it is retained before any answer is
        # sent: a client that got its answer and PUTs the id again finds it.
        pred.add_done_callback(self._retain_finished)
        return pred

    def _create_waited(self, kind: str, req: PredictionRequest, pid: str, value: Any, schema: Optional[dict],
                       component: str, deadline: Optional[float], accepted: float) -> tuple[Prediction, bool]:
        """:meth:`_create` for a plain request whose caller waits for the run (no SSE,
        webhook or spooled input): the request goes to the worker first, and the record
        is built while the worker runs it (:meth:`Run.attach`), some 20 us of a null
        prediction's path.  Another request that looks the id up meanwhile waits for
        the record (:meth:`Run.listener_now`)."""
        try:
            run = self.engine.submit(pid, value, None, context=req.context, wait=True)
        except DuplicateRun as exc:
            # Another request started this id meanwhile (two racing PUTs): answer with that one.
            listener = exc.run.listener_now()
            if isinstance(listener, Prediction):
                return listener, False
            raise
        try:
            pred = self._new_record(kind, pid, value, schema, component, run=run)
            pred.retain()  # the caller's reference (see create())
        except BaseException:
            # (Nothing here is expected to fail.) The run still needs an owner and a reader.
            run.attach(None)
            run.cancel()
            run.read_until(lambda: True, 0.0)
            run.release()
            raise
        run.attach(pred)  # started(), here, after the request went out
        if deadline is not None:
            self._arm_deadline(pred, deadline, accepted)
        return pred, True

    def _arm_deadline(self, pred: Prediction, deadline: float, accepted: float) -> None:
        timer = self.timers.call_at(accepted + deadline, lambda: self._deadline_passed(pred, deadline))
        if timer is not None:
            with self._lock:
                self._deadlines[id(pred)] = timer
            if pred.is_terminal:  # ended before the timer was recorded
                self._drop_deadline(pred)

    def _deadline_passed(self, pred: Prediction, seconds: float) -> None:
        with self._lock:
            self._deadlines.pop(id(pred), None)
        if pred.is_terminal:
            return
        log.info("%s %s: its deadline (%s) passed; canceling it", pred.kind, pred.id, format_duration(seconds))
        pred.log("stderr", f"[minicog] deadline ({format_duration(seconds)}) passed: canceling the prediction\n")
        pred.request_cancel()

    def _drop_deadline(self, pred: Prediction) -> None:
        with self._lock:
            timer = self._deadlines.pop(id(pred), None)
        if timer is not None:
            timer.cancel()

    def idle(self) -> bool:
        """True while no prediction runs (a hint read without a lock)."""
        return self.engine.idle()

    def cancel(self, prediction_id: str) -> bool:
        pred = self.find_inflight(prediction_id)
        if pred is None:
            return False
        pred.request_cancel()
        return True

    def _on_terminal(self, pred: Prediction) -> None:
        if self._deadlines:
            self._drop_deadline(pred)
        started = pred.started_mono
        self.metrics.prediction_finished(pred.status, None if started is None else started - pred.created_mono,
                                         None if started is None else time.monotonic() - started)
        self._wake_drain()

    def _wake_drain(self) -> None:
        if self._drain_waiters:  # read without the lock: a drain that starts now looks itself
            with self._lock:
                self._lock.notify_all()

    def _on_release(self, pred: Prediction) -> None:
        pred.run.release()  # this run's folder only: an id may have been reused meanwhile
        self._wake_drain()
        if pred.spooled:
            from minicog.server import spool

            spool.release(pred.spooled)
            pred.forget_spooled()


# ---------------------------------------------------------------------- serve()
def freeze_startup_objects(settings: Settings) -> bool:
    """``gc.freeze()`` the objects made so far if ``settings.gc_freeze``; True if it did.

    For the serving process only (see ``Settings.gc_freeze``): what it made while
    starting lives as long as it does, and the collector need not walk it again.
    """
    if not settings.gc_freeze:
        return False
    gc.freeze()
    return True


def serve(ref: Optional[str] = None, *, host: Optional[str] = None, port: Optional[int] = None,
          upload_url: Optional[str] = None, await_explicit_shutdown: bool = False, mode: str = "predict",
          max_concurrency: Optional[int] = None, log_format: str = "text", settings: Optional[Settings] = None,
          cwd: Optional[str] = None, env: Optional[dict[str, str]] = None,
          orchestrator: Optional[Engine] = None, workers: Any = None, gpus: Any = None,
          pending_signals: Sequence[int] = ()) -> int:
    """Serve until shut down; returns the process exit code (see docs/architecture.rst).

    *pending_signals*: SIGTERM/SIGINT numbers a caller caught before this call (``cli``
    records them while the workers spawn); they count as if they arrived here.
    """
    settings = settings if settings is not None else Settings.from_env()
    configure_logging(log_format, settings.log_level)
    if settings.gil_switch_interval > 0:
        sys.setswitchinterval(settings.gil_switch_interval)  # this process is the server's alone
    service = Service(ref, settings=settings, host=host, port=port, upload_url=upload_url, mode=mode,
                      max_concurrency=max_concurrency, await_explicit_shutdown=await_explicit_shutdown,
                      cwd=cwd, env=env, orchestrator=orchestrator, workers=workers, gpus=gpus)
    # Handlers first: the "listening" log line may be what a supervisor waits for before
    # signalling, and a signal must never meet the default disposition (KeyboardInterrupt).
    received: list[int] = []
    effective: list[int] = []  # the signals that stop the server (not an ignored SIGTERM)

    def on_signal(signum: int, frame: Any) -> None:
        # Only record it: the main loop below decides what to do (no locks in handlers).
        received.append(signum)
        if not (signum == signal.SIGTERM and await_explicit_shutdown):
            effective.append(signum)
            if len(effective) > 1 or service._stopping:
                service.force_stop = True  # a second signal: stop waiting

    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            installed[sig] = signal.signal(sig, on_signal)
        service.stop_hint = ("A second Ctrl-C (SIGINT)" if await_explicit_shutdown else
                             "A second Ctrl-C (SIGINT or SIGTERM)") + \
            " stops at once: running predictions are canceled and pending webhooks are not waited for"
    # Read after the handlers are in place: the caller's list gets nothing more.
    for sig in list(pending_signals):
        on_signal(sig, None)
    try:
        service.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", service.host, service._requested_port, exc)
        service.orchestrator.stop(0)
        for sig, previous in installed.items():
            signal.signal(sig, previous)
        return 1
    freeze_startup_objects(settings)

    try:
        seen = 0
        while True:
            if service.wait_shutdown_requested(0.2):
                log.info("shutdown requested over HTTP")
                break
            if len(received) > seen:
                sig = received[seen]
                seen += 1
                if sig == signal.SIGTERM and await_explicit_shutdown:
                    log.info("SIGTERM ignored (--await-explicit-shutdown): POST /shutdown or SIGINT stops the server")
                    continue
                log.info("received %s", signal.Signals(sig).name)
                break
    finally:
        service.stop()
        for sig, previous in installed.items():
            signal.signal(sig, previous)
    return 0
