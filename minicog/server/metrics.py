"""Prometheus metrics for ``GET /metrics``, written by hand in the text exposition format.

The format is a few lines of text (Prometheus' "text-based format", version 0.0.4):
for each metric family a ``# HELP`` and a ``# TYPE`` line, then one sample per
line, ``name{label="value",...} number``.  Counters end in ``_total``; a histogram
is cumulative ``_bucket{le="..."}`` samples ending with ``le="+Inf"``, then
``_sum`` and ``_count``; durations are in seconds (``_seconds``).  Label values
escape ``\\``, ``"`` and newlines.

Families (every series that can be known in advance is present from the start at 0,
so a rate over a fresh server is defined):

* ``minicog_predictions_total{status}`` - predictions (and trainings) ended, by
  terminal status (``succeeded``/``failed``/``canceled``);
* ``minicog_prediction_duration_seconds`` - histogram, start of the run to its end;
* ``minicog_prediction_queue_seconds`` - histogram, request accepted to start of
  the run (queue-to-start time);
* ``minicog_predictions_in_flight``, ``minicog_slots``, ``minicog_slots_free`` - gauges;
* ``minicog_worker_restarts_total{cause}`` - worker processes replaced, by cause;
* ``minicog_webhook_deliveries_total{event}`` / ``minicog_webhook_failures_total{event}``
  - webhook attempts answered 2xx / failed (transport error or other status);
* ``minicog_webhooks_pending`` - terminal webhooks not yet delivered or given up;
* ``minicog_setup_duration_seconds`` - how long the current worker's setup took;
* ``minicog_info{version}`` - always 1.

Recording is a lock and a few additions per prediction; the text is built only
when scraped.  The gauges are read from the service at scrape time.
"""

from __future__ import annotations

import bisect
import math
import threading
from typing import Iterable, Optional

from minicog._version import __version__

__all__ = ["Metrics", "Histogram", "CONTENT_TYPE", "DURATION_BUCKETS", "QUEUE_BUCKETS", "RESTART_CAUSES"]

#: The media type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Upper bounds (seconds) of the duration histogram: a null prediction to an hour-long one.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                    600.0, 1800.0, 3600.0)
#: Upper bounds (seconds) of the queue-to-start histogram: usually well under a millisecond.
QUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

STATUSES = ("succeeded", "failed", "canceled")
#: ``crash`` (the worker died), ``cancel_timeout`` (killed: a canceled prediction did not
#: stop in time), ``recycle`` (replaced after reaching a recycling limit).
RESTART_CAUSES = ("crash", "cancel_timeout", "recycle")
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")


def _number(value: float) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class Histogram:
    """Fixed buckets; not locked itself (the owner's lock is held)."""

    def __init__(self, buckets: Iterable[float]):
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.bounds + (math.inf,), self.counts):
            running += n
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
        out.append(f"{name}_sum {_number(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


class Metrics:
    """The service's counters and histograms (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.predictions = {s: 0 for s in STATUSES}
        self.duration = Histogram(DURATION_BUCKETS)
        self.queue = Histogram(QUEUE_BUCKETS)
        self.restarts = {c: 0 for c in RESTART_CAUSES}
        self.webhook_ok = {e: 0 for e in WEBHOOK_EVENTS}
        self.webhook_failed = {e: 0 for e in WEBHOOK_EVENTS}

    # ---------------------------------------------------------------- recording
    def prediction_finished(self, status: str, queue_seconds: Optional[float], run_seconds: Optional[float]) -> None:
        """One prediction ended; the times are None if it never started."""
        with self._lock:
            self.predictions[status] = self.predictions.get(status, 0) + 1
            if queue_seconds is not None:
                self.queue.observe(max(0.0, queue_seconds))
            if run_seconds is not None:
                self.duration.observe(max(0.0, run_seconds))

    def webhook_attempt(self, event: str, ok: bool) -> None:
        with self._lock:
            table = self.webhook_ok if ok else self.webhook_failed
            table[event] = table.get(event, 0) + 1

    # ---------------------------------------------------------------- rendering
    def render(self, *, in_flight: int, slots: int, free_slots: int, webhooks_pending: int,
               setup_seconds: Optional[float], restarts: Optional[dict] = None) -> str:
        """The exposition text; the gauges (and the engine's restart counts, which it keeps
        itself) are passed in by the caller at scrape time."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        def labelled(name: str, label: str, table: dict) -> None:
            for key, value in table.items():
                lines.append(f"{name}{_labels([(label, key)])} {_number(value)}")

        with self._lock:
            family("minicog_info", "gauge", "Always 1; the version label says which minicog serves.")
            lines.append(f"minicog_info{_labels([('version', __version__)])} 1")
            family("minicog_predictions_total", "counter", "Predictions ended, by terminal status.")
            labelled("minicog_predictions_total", "status", self.predictions)
            family("minicog_prediction_duration_seconds", "histogram", "Seconds from the start of a run to its end.")
            lines.extend(self.duration.lines("minicog_prediction_duration_seconds"))
            family("minicog_prediction_queue_seconds", "histogram",
                   "Seconds from accepting a prediction to the start of its run.")
            lines.extend(self.queue.lines("minicog_prediction_queue_seconds"))
            family("minicog_worker_restarts_total", "counter", "Worker processes replaced, by cause.")
            labelled("minicog_worker_restarts_total", "cause", {**self.restarts, **(restarts or {})})
            family("minicog_webhook_deliveries_total", "counter", "Webhook attempts answered with a 2xx status, by event.")
            labelled("minicog_webhook_deliveries_total", "event", self.webhook_ok)
            family("minicog_webhook_failures_total", "counter",
                   "Webhook attempts that failed (transport error or a non-2xx status), by event.")
            labelled("minicog_webhook_failures_total", "event", self.webhook_failed)
        family("minicog_predictions_in_flight", "gauge", "Predictions accepted and not yet ended.")
        lines.append(f"minicog_predictions_in_flight {in_flight}")
        family("minicog_slots", "gauge", "Prediction slots of the worker.")
        lines.append(f"minicog_slots {slots}")
        family("minicog_slots_free", "gauge", "Prediction slots free now.")
        lines.append(f"minicog_slots_free {free_slots}")
        family("minicog_webhooks_pending", "gauge", "Terminal webhooks not yet delivered or given up.")
        lines.append(f"minicog_webhooks_pending {webhooks_pending}")
        if setup_seconds is not None:
            family("minicog_setup_duration_seconds", "gauge", "Seconds the current worker's setup took.")
            lines.append(f"minicog_setup_duration_seconds {_number(setup_seconds)}")
        return "\n".join(lines) + "\n"
