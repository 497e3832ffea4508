"""The Prediction record: one per request, the single owner of its state.

A :class:`Prediction` is the listener the engine calls (``started``,
``log``, ``output``, ``file_output``, ``metric``, ``succeeded``, ``failed``,
``canceled``, on the engine's I/O thread) and the only place where
status, output, logs, metrics, error and timestamps change.  Each transition,
made under the record's lock, produces the events the three consumers read:

* the HTTP response (sync waiters via :meth:`wait`, then :meth:`snapshot`),
* the SSE subscribers (:attr:`events`, an :class:`~minicog.server.sse.EventStream`),
* the webhook sender (:class:`~minicog.server.webhooks.WebhookSender`).

Nothing else produces those events, so the three can never disagree.  All
consumer calls made under the lock are non-blocking (queue appends), which
keeps the engine's I/O thread free.

State machine (Cog's): ``starting`` → ``processing`` → ``succeeded`` |
``failed`` | ``canceled``.  Terminal states are sticky; later calls are ignored.
As in coglet, a prediction whose cancel was requested ends ``canceled`` even if
the model returned normally (its output is kept).

Outputs.  Items keep the order the worker produced them.  A file output is a
:class:`~minicog.server.outputs.FileOutput` (a lazily encoded ``data:`` URI), or,
with an uploader, a placeholder filled in when its upload finishes on the
uploader's pool.  Events for item *k* are published only once items 0..k are
all known, and a ``succeeded`` from the engine waits for outstanding
uploads before the record turns terminal; an upload failure turns the result
into ``failed`` with the upload's error (and asks for the worker's prediction to
be canceled if it is still running).

Output wrapping at the end follows Cog: the output is a list when the schema's
Output is an array (``stream_output``) or the worker says it streamed; otherwise
no item → ``null``, one item → that item, several → a list.

Metrics merge and output wrapping are :mod:`minicog.engine.rules` (shared with
the embedding API).  ``predict_time`` (seconds since the record was created) is
added at the end.

Cancels.  The record's cancel flag is its :class:`~minicog.engine.run.Run`'s
(``self.run``, the handle the engine's ``submit`` returned; a detached one
until then), so there is one flag per run.

Input.  ``input`` is the input as it may be echoed (the PUT-in-flight answer,
``snapshot(with_input=True)``): the service gives the record the form
:func:`minicog.validation.redact_input` made, with secret inputs replaced by
``**********``, and passes the clear value to the orchestrator only.

Timestamps ``created_at``, ``started_at`` and ``completed_at`` are ISO 8601 UTC
(Cog's schema declares them; coglet never sends them).

Life of the output files.  The record starts with one reference to itself; the
HTTP request that created it (the service retains for it before the record is
submitted, so a fast model cannot end first), each later reader and the webhook
sender take one more (:meth:`retain`) and give it back (:meth:`release`).  When the record is
terminal and the count drops to zero, ``on_release`` runs once: the service
uses it to release its :class:`~minicog.engine.Run` (the run's temporary files go).
"""

from __future__ import annotations

import copy
import datetime
import logging
import threading
import time
from typing import Any, Callable, Optional

from minicog.console import log_deferred
from minicog.engine.rules import TERMINAL_STATUSES, merge_metric, shape_output
from minicog.engine.run import Latch, Run
from minicog.server.outputs import FileOutput
from minicog.server.sse import EventStream
from minicog.settings import Settings

__all__ = ["Prediction", "merge_metric", "utc_now", "TERMINAL_STATUSES"]

log = logging.getLogger("minicog.prediction")

_PENDING = object()  # an output item whose upload has not finished


#: (whole second, its "YYYY-MM-DDTHH:MM:SS" text): three times per prediction, formatting
#: a datetime cost more than the rest of the record's set-up.
_utc_second: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds (``2024-05-01T12:00:00.123456+00:00``)."""
    global _utc_second
    now = time.time()
    second = int(now)
    cached = _utc_second  # one read: another thread may replace it meanwhile
    if cached[0] != second:
        text = datetime.datetime.fromtimestamp(second, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _utc_second = (second, text)
    return f"{cached[1]}.{int((now - second) * 1e6):06d}+00:00"


def _copy_json(value: Any) -> Any:
    """A copy of a JSON value (dicts and lists copied, the rest shared: immutable).

    Metrics hold only JSON values; ``copy.deepcopy`` of them cost several times more
    (its memo), twice per prediction.
    """
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _plain_strings(value: Any) -> Any:
    if isinstance(value, str) and type(value) is not str:
        return str.__str__(value)
    if isinstance(value, list):
        return [_plain_strings(v) for v in value]
    return value


class Prediction:
    """One prediction or training: the engine's listener and the record of its state."""

    def __init__(self, id: str, input: Any, *, kind: str = "prediction", settings: Optional[Settings] = None,
                 stream_output: bool = False, events: Optional[EventStream] = None, webhook: Any = None,
                 uploader: Any = None, on_cancel: Optional[Callable[[], None]] = None,
                 on_terminal: Optional[Callable[["Prediction"], None]] = None,
                 on_release: Optional[Callable[["Prediction"], None]] = None, run: Optional[Run] = None):
        self.id = id
        #: The engine's handle for this run: *run* when it was submitted before the record
        #: was built (see Run.attach), else a detached one until :meth:`attach`.
        self.run = Run(id, self) if run is None else run
        self.input = input
        self.kind = kind
        self.settings = settings or Settings()
        self.stream_output = stream_output
        self.events = events
        self.webhook = webhook
        self.uploader = uploader
        self.on_cancel = on_cancel
        self.on_terminal = on_terminal
        self.on_release = on_release
        #: Set for predictions created by an SSE request: when the last reader leaves
        #: before the end, the prediction is canceled (coglet's rule).
        self.cancel_on_disconnect = False
        #: The SSE request that created this record: its reader, subscribed before the
        #: run was submitted (see ``Service.create``), taken by that request's writer.
        self.creator_reader: Optional[Any] = None

        self._lock = threading.Lock()
        self._done = Latch()
        self._callbacks: list[Callable[["Prediction"], None]] = []
        self.status = "starting"
        self.created_at = utc_now()
        self.started_at: Optional[str] = None
        self.completed_at: Optional[str] = None
        self._t0 = time.monotonic()
        #: time.monotonic() at creation and when the run started (for the duration metrics).
        self.created_mono = self._t0
        self.started_mono: Optional[float] = None
        self._logs: list[str] = []
        self._logs_text = ""
        self._items: list[Any] = []
        self._published = 0  # items 0.._published-1 are known and were announced
        self._pending_uploads = 0
        self._upload_error: Optional[str] = None
        self._terminal_request: Optional[tuple] = None  # ("succeeded", is_stream) waiting for uploads
        self.metrics: dict = {}
        self.error: Optional[str] = None
        self._output: Any = None
        self._has_output = False
        self._refs = 1
        self._released = False
        #: Spooled data: URI inputs (minicog.server.spool) whose files this record owns.
        self.spooled: list = []
        # The end's bookkeeping (see defer_end_work): held while the thread answering
        # the request does it after the answer.
        self._end_deferred = False
        self._held_end: Optional[tuple] = None

    @property
    def uploading(self) -> bool:
        """True while an output file is being uploaded (its event is published from another thread)."""
        return self._pending_uploads > 0

    def attach(self, run: Run) -> None:
        """Take the engine's handle for this run; a cancel asked for before carries over."""
        early = self.run.cancel_requested
        self.run = run
        if early:
            run.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self.run.cancel_requested

    # ------------------------------------------------------------------ queries
    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the record is terminal; True if it is.

        While the worker runs it, this thread reads the run's messages itself
        (:meth:`Run.wait`): a sync request's answer needs no hand-off.  With a
        webhook outbox, also until the terminal webhook is written there (the
        waiting thread writes it itself if no writer thread has started on it), so a
        sync response never shows a result whose webhook a killed process could lose.
        """
        if not self._done.is_set():
            run = self.run
            if run.proc is not None and not run.done():
                deadline = None if timeout is None else time.monotonic() + timeout
                run.wait(timeout)
                if deadline is not None:
                    timeout = max(0.0, deadline - time.monotonic())
            if not self._done.wait(timeout):
                return False
        if self.webhook is not None:
            self.webhook.wait_durable()
        return True

    def defer_end_work(self) -> None:
        """Hold the bookkeeping of this record's end until :meth:`end_work_now`.

        A sync request's thread waits for the record and ends it itself (see
        :meth:`wait`); what the answer does not need then comes after it: the
        console line (~10-30 us), the done callbacks (keeping the record for reads,
        resuming a request waiting for the slot) and ``on_terminal`` (metrics).
        Until the caller releases its reference, the record is found by id anyway
        (its run stays open).  The caller must call :meth:`end_work_now` once it
        stops waiting and before it releases the record, whatever the outcome.
        """
        with self._lock:
            self._end_deferred = True

    def end_work_now(self) -> None:
        """Stop deferring the end's bookkeeping; do it now if the record has ended."""
        with self._lock:
            self._end_deferred = False
            held, self._held_end = self._held_end, None
        if held is not None:
            self._end_work(*held)

    def _end_work(self, line: Optional[tuple], callbacks: list) -> None:
        if line is not None:
            self._log_finished(*line)
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                log.exception("done callback of prediction %s failed", self.id)
        if self.on_terminal is not None:
            try:
                self.on_terminal(self)
            except Exception:
                log.exception("terminal callback of prediction %s failed", self.id)

    def _log_finished(self, status: str, failure: Optional[str], predict_time: float) -> None:
        # One line per finished prediction for the operator, built and written on the
        # console's own thread (minicog.console.log_deferred).
        log_deferred(log, logging.INFO, "%s %s %s in %.3fs%s", self.kind, self.id, status, predict_time,
                     f": {failure}" if failure else "",
                     extra={"prediction_id": self.id, "kind": self.kind, "status": status,
                            "predict_time": round(predict_time, 6), "error": failure})

    def add_done_callback(self, fn: Callable[["Prediction"], None]) -> None:
        """Call ``fn(self)`` once the record is terminal (at once if it already is).

        It runs on the thread that ends the record (the engine's I/O thread), so
        it must not block: the HTTP layer only queues the answer there.
        """
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    @property
    def logs(self) -> str:
        with self._lock:
            return self._logs_joined()

    def _logs_joined(self) -> str:
        if len(self._logs) > 1:
            self._logs[:] = ["".join(self._logs)]
        return self._logs[0] if self._logs else ""

    def snapshot(self, *, with_input: bool = False) -> dict:
        """The state as Cog's JSON object (file outputs still as FileOutput objects)."""
        with self._lock:
            return self._snapshot(with_input)

    def _snapshot(self, with_input: bool = False) -> dict:
        snap: dict[str, Any] = {"id": self.id, "status": self.status, "logs": self._logs_joined(),
                                "metrics": _copy_json(self.metrics)}
        if self.is_terminal:
            if self._has_output:
                snap["output"] = self._output
        elif self._published:
            snap["output"] = list(self._items[:self._published])
        if self.error is not None:
            snap["error"] = self.error
        snap["created_at"] = self.created_at
        if self.started_at:
            snap["started_at"] = self.started_at
        if self.completed_at:
            snap["completed_at"] = self.completed_at
        if with_input:
            snap["input"] = self.input
        return snap

    # ------------------------------------------------------------ references
    def retain(self) -> bool:
        """Take a reference on the output files; False if they were already released."""
        with self._lock:
            if self._released:
                return False
            self._refs += 1
            return True

    def release(self) -> None:
        """Give back a reference; the last one after the end runs ``on_release``."""
        with self._lock:
            self._refs -= 1
            fire = self._refs <= 0 and self.is_terminal and not self._released
            if fire:
                self._released = True
        if fire and self.on_release is not None:
            try:
                self.on_release(self)
            except Exception:
                log.exception("releasing the files of prediction %s failed", self.id)

    def forget_spooled(self) -> None:
        """The spooled inputs' files are gone: echo their heads (``data:<mime>;base64,``)
        from now on instead of a file that cannot be read."""
        with self._lock:
            self.spooled = []
            if isinstance(self.input, dict):
                self.input = {k: _plain_strings(v) for k, v in self.input.items()}

    # ------------------------------------------------------------- requests
    def request_cancel(self) -> None:
        """Cancel the run: the worker is told if it still runs; a record waiting only
        for uploads ends ``canceled`` now."""
        with self._lock:
            if self.is_terminal:
                return
        self.run.cancel()
        with self._lock:
            finalize = self._terminal_request is not None and not self.is_terminal
        if finalize:
            # Waiting only for uploads: coglet's cancel token aborts them.
            self._finish("canceled")

    # ------------------------------------------------------- listener protocol
    def started(self) -> None:
        with self._lock:
            if self.status != "starting":
                return
            self.status = "processing"
            self.started_at = utc_now()
            self.started_mono = time.monotonic()
            if self.events is not None:
                self.events.publish("start", {"id": self.id, "status": "processing"})
            if self.webhook is not None:
                self.webhook.send("start", lambda: self._snapshot())

    def log(self, source: str, data: str) -> None:
        with self._lock:
            if self.is_terminal:
                return
            self._logs.append(data)
            if self.events is not None:
                self.events.publish("log", {"data": data, "source": source})
            if self.webhook is not None:
                self.webhook.send("logs", lambda: self._snapshot())
        if log.isEnabledFor(logging.INFO):
            # The operator's console, as coglet logs them: each line with the prediction id
            # (the text format prefixes "[id] "; JSON carries prediction_id and source).
            fields = {"prediction_id": self.id, "source": source}
            for line in data.splitlines():
                if line.strip():
                    log_deferred(log, logging.INFO, "%s", line, extra=fields)

    @property
    def has_output(self) -> bool:
        """True once an output item was published (the first SSE ``output`` event)."""
        return self._published > 0

    def output(self, index: int, value: Any) -> None:
        with self._lock:
            if self.is_terminal:
                return
            self._items.append(value)
            self._advance()

    def file_output(self, index: int, path: str, mime: Optional[str]) -> None:
        try:
            item = FileOutput(path, mime)
        except OSError as exc:
            self._fail_output(f"Output file {path} could not be read: {exc.strerror or exc}")
            return
        with self._lock:
            if self.is_terminal:
                return
            if self.uploader is None:
                self._items.append(item)
                self._advance()
                return
            slot = len(self._items)
            self._items.append(_PENDING)
            self._pending_uploads += 1
        self.uploader.submit(item.path, item.mime, self.id, lambda url, error: self._uploaded(slot, url, error))

    def metric(self, name: str, value: Any, mode: str) -> None:
        with self._lock:
            if self.is_terminal:
                return
            merge_metric(self.metrics, name, value, mode)
            if self.events is not None:
                self.events.publish("metric", {"mode": mode, "name": name, "value": value})

    def succeeded(self, is_stream: bool = False) -> None:
        with self._lock:
            if self.is_terminal or self._terminal_request is not None:
                return
            self._terminal_request = ("succeeded", is_stream)
            if self._pending_uploads:
                return
        # _finish settles an upload error or a cancel itself, as _resolve_terminal would.
        self._finish("succeeded", is_stream=is_stream)

    def failed(self, error: str) -> None:
        self._finish("failed", error)

    def canceled(self) -> None:
        self._finish("canceled")

    # ------------------------------------------------------------- internals
    def _advance(self) -> None:
        """Announce items that became contiguous (lock held)."""
        while self._published < len(self._items) and self._items[self._published] is not _PENDING:
            index = self._published
            self._published += 1
            if self.events is not None:
                self.events.publish("output", {"chunk": self._items[index], "index": index})
            if self.webhook is not None:
                self.webhook.send("output", lambda: self._snapshot())

    def _uploaded(self, slot: int, url: Optional[str], error: Optional[str]) -> None:
        with self._lock:
            self._pending_uploads -= 1
            if self.is_terminal:
                return
            if error is not None:
                if self._upload_error is None:
                    self._upload_error = error
            else:
                self._items[slot] = url
                self._advance()
            ready = self._terminal_request is not None and not self._pending_uploads
            cancel_worker = error is not None and self._terminal_request is None
        if cancel_worker:
            # The output is already lost: stop the model instead of letting it run on.
            try:
                self._cancel_worker()
            except Exception:
                log.exception("canceling prediction %s after an upload failure failed", self.id)
        if ready:
            self._resolve_terminal()

    def _cancel_worker(self) -> None:
        """Stop the worker's run without marking a client cancel (our own cancel after an output failure)."""
        if self.on_cancel is not None:
            self.on_cancel()
        elif self.run.proc is not None:
            self.run._engine._stop_run(self.run)  # type: ignore[union-attr]

    def _fail_output(self, error: str) -> None:
        with self._lock:
            if self.is_terminal:
                return
            if self._upload_error is None:
                self._upload_error = error
            cancel_worker = self._terminal_request is None
        if cancel_worker:
            self._cancel_worker()

    def _resolve_terminal(self) -> None:
        with self._lock:
            request = self._terminal_request
        if self._upload_error is not None:
            self._finish("failed", self._upload_error)
        elif self.cancel_requested:
            self._finish("canceled", is_stream=request[1] if request else False)
        else:
            self._finish("succeeded", is_stream=request[1] if request else False)

    def _finish(self, status: str, error: Optional[str] = None, *, is_stream: bool = False) -> None:
        with self._lock:
            if self.is_terminal:
                return
            # An upload failure decides the result, unless a client asked for the cancel
            # (our own cancel after the failure must not hide the error).
            if self._upload_error is not None and not (status == "canceled" and self.cancel_requested):
                status, error = "failed", self._upload_error
            elif status == "succeeded" and self.cancel_requested:
                status = "canceled"
            items = [i for i in self._items if i is not _PENDING]
            # A failed or canceled record shows output only if the model produced some.
            self._has_output = bool(items) or status == "succeeded"
            self._output = shape_output(items, array=self.stream_output or is_stream)
            self.status = status
            self.error = error if status == "failed" else None
            self.completed_at = utc_now()
            self.metrics["predict_time"] = time.monotonic() - self._t0
            # Built only for its readers: a plain sync answer takes its own snapshot.
            snap = self._snapshot() if self.events is not None or self.webhook is not None else None
            if self.events is not None:
                self.events.publish("completed", snap)
                self.events.close()
            if self.webhook is None:
                self._done.set()
        if self.webhook is not None:
            # Outside the lock: a sender that has nothing to send releases its reference
            # on this record right away (which takes the lock).  _done is set after the
            # terminal webhook is queued, so wait() can make sure it is in the outbox.
            self.webhook.send("completed", snap)
            self._done.set()
        line = None
        if log.isEnabledFor(logging.INFO):
            line = (status, self.error if status == "failed" else None, self.metrics["predict_time"])
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
            if self._end_deferred:  # the answering thread does it after the answer
                self._held_end, line, callbacks = (line, callbacks), None, None
        if callbacks is not None:
            self._end_work(line, callbacks)
        self.release()
