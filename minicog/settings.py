"""Every limit, timeout and tunable of minicog, in one place.

Each field of :class:`Settings` carries its unit in its name or comment.  Where
Cog (coglet 0.23.1) reads an environment variable for the same knob, the field
reads that variable too, so a deployment tuned for Cog behaves the same here;
knobs Cog does not have use a ``MINICOG_`` variable.  Bad values never crash the
server: they fall back to the default with a warning, as coglet does.

Code that needs a limit takes a ``Settings`` instance (usually
``Settings.from_env()`` built once at start-up) instead of reading ``os.environ``
itself; tests build one with keyword overrides.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
from typing import Any, Callable, Mapping, Optional

__all__ = ["Settings", "MiB", "KiB"]

log = logging.getLogger("minicog.settings")

KiB = 1024
MiB = 1024 * 1024


def _env(name: str, *, cast: Callable[[str], Any] = str, check: Callable[[Any], bool] = lambda v: True):
    """Metadata for a field that may be overridden by environment variable *name*."""
    return {"env": name, "cast": cast, "check": check}


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)")
_DURATION_PLAIN = re.compile(r"\d+(?:\.\d*)?|\.\d+")
#: Longest duration accepted (seconds): a year; beyond it a value is surely a mistake.
MAX_DURATION_SECONDS = 366 * 24 * 3600.0


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``30s``, ``1m``, ``1h30m``, ``500ms``) or a plain number
    of seconds (``30``), as Replicate's ``Cancel-After``; ValueError saying why if malformed."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    if _DURATION_PLAIN.fullmatch(value):
        seconds = float(value)
    else:
        pos, seconds = 0, 0.0
        while pos < len(value):
            m = _DURATION_PART.match(value, pos)
            if m is None:
                raise ValueError(f"{text!r} is not a duration such as 30s, 1m, 1h30m or a number of seconds")
            seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r} is longer than a year")
    return seconds


def _webhook_secret(text: str) -> str:
    """A Standard Webhooks secret: ``whsec_`` (optional) + non-empty base64; ValueError otherwise."""
    import base64
    import binascii
    body = text.strip()
    body = body[len("whsec_"):] if body.startswith("whsec_") else body
    try:
        if not base64.b64decode(body, validate=True):
            raise ValueError("empty key")
    except binascii.Error:
        raise ValueError("not whsec_ followed by base64") from None
    return text.strip()


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Settings:
    # --- HTTP front-end -------------------------------------------------------------
    #: Address to listen on.  Loopback by default, as ``cog serve`` binds, so a model is not
    #: exposed to the network by accident; ``--host 0.0.0.0`` or HOST=0.0.0.0 exposes it
    #: (needed in a container or pod).
    host: str = dataclasses.field(default="127.0.0.1", metadata=_env("HOST", check=lambda v: bool(v.strip())))
    #: TCP port to listen on.  Cog reads PORT.
    port: int = dataclasses.field(default=5000, metadata=_env("PORT", cast=int, check=lambda v: 0 <= v < 65536))
    #: Largest request body accepted, in bytes (axum's default, as coglet): larger → 413.
    max_body_bytes: int = 100 * MiB
    #: A ``data:`` URI input longer than this many characters is decoded to a file
    #: straight from the request body (never held as a string nor sent through the
    #: worker's channel): see minicog/server/spool.py.  0 turns this off.
    data_uri_spool_chars: int = dataclasses.field(default=1 * MiB, metadata=_env(
        "MINICOG_DATA_URI_SPOOL_CHARS", cast=int, check=lambda v: v >= 0))
    #: Largest request line plus headers, in bytes: larger → 431.
    max_header_bytes: int = 64 * KiB
    #: Seconds a connection may stay silent while a request is being read (or idle between
    #: keep-alive requests) before the server closes it, so slow clients cannot pin threads.
    read_timeout: float = dataclasses.field(default=30.0, metadata=_env("MINICOG_READ_TIMEOUT", cast=float, check=lambda v: v > 0))
    #: Seconds a client has to send a whole request head (request line and headers) from
    #: its first byte; a client trickling bytes (slow loris) is disconnected then.  It waits
    #: in the selector meanwhile, so it costs no thread.
    header_timeout: float = dataclasses.field(default=20.0, metadata=_env("MINICOG_HEADER_TIMEOUT", cast=float, check=lambda v: v > 0))
    #: Threads answering HTTP requests at most (a bounded pool; idle connections and requests
    #: still arriving cost none, and neither do sync requests waiting for their prediction).
    #: More lets more slow readers of large responses be served at once; fewer keeps the GIL
    #: for the threads that complete predictions when clients flood a busy server.
    http_threads: int = dataclasses.field(default=4, metadata=_env("MINICOG_HTTP_THREADS", cast=int, check=lambda v: v >= 1))
    #: Seconds a thread of the serving process may keep the GIL while another one waits
    #: for it (``sys.setswitchinterval``; CPython's default is 0.005).  Under load the
    #: threads that complete predictions (the engine's I/O thread, the pool thread writing
    #: the answer) each wait up to that long behind threads parsing new requests: with
    #: 0.001, 32 closed-loop clients on 8 slots got about 15% more answers per second
    #: (see benchmarks/README.rst).  Set by ``minicog serve`` only, since it is process-wide
    #: (an embedding application keeps its own); the worker process is not affected.
    #: 0 leaves the interpreter's value.
    gil_switch_interval: float = dataclasses.field(default=0.001, metadata=_env(
        "MINICOG_GIL_SWITCH_INTERVAL", cast=float, check=lambda v: v >= 0))
    #: Move the objects the serving process made while starting (modules, the engine, the
    #: HTTP server: about 90,000) out of the cyclic garbage collector's view once it
    #: listens (``gc.freeze``).  They live as long as the process, yet every full
    #: collection walked them again (docs/architecture.rst "Hot path" has the figures,
    #: measured with the end of a record's cycle with its run).  Set by ``minicog serve`` only,
    #: since it is process-wide (an embedding application keeps its own); the worker
    #: process is not affected.
    gc_freeze: bool = dataclasses.field(default=True, metadata=_env("MINICOG_GC_FREEZE", cast=_bool))
    #: Seconds an idle thread of that pool waits for work before it exits.
    http_thread_idle_timeout: float = 5.0
    #: Seconds a request thread waits on a keep-alive connection for the next request
    #: after answering one, before handing the connection back to the selector.  A client
    #: that sends its requests back to back (a closed loop) is then answered without the
    #: selector's wake-up and hand-over (two thread switches per request).  Only while no
    #: request waits for a thread and the pool has one to spare; 0 turns it off.
    keepalive_linger: float = dataclasses.field(default=0.002, metadata=_env(
        "MINICOG_KEEPALIVE_LINGER", cast=float, check=lambda v: 0 <= v <= 1))
    #: Connections the kernel may queue before the server accepts them (listen backlog;
    #: the kernel caps it at net.core.somaxconn).
    listen_backlog: int = 1024
    #: Seconds a request that finds every slot busy may wait (without a thread) for one to
    #: free before it is answered 409; each prediction's end lets the oldest waiter in.
    #: 0 (the default) answers 409 at once, as Cog does.  A wait keeps clients that retry
    #: at once from turning the spare CPU into 409s; it is opt-in because Cog's contract
    #: is the immediate 409.
    slot_wait: float = dataclasses.field(default=0.0, metadata=_env("MINICOG_SLOT_WAIT", cast=float, check=lambda v: v >= 0))
    #: Seconds sent in Retry-After with 409 (all slots busy) and 503 (not ready).
    retry_after: int = 1
    #: Seconds between checks that a client waiting on a sync or SSE response is still
    #: connected (a disconnect cancels its prediction).
    disconnect_poll_interval: float = 0.1
    #: Seconds a thread that expects a message soon polls for it without sleeping before it
    #: blocks: the worker for its next request after a sync prediction, the request thread
    #: for the worker's answer and for the next request on a keep-alive connection.  On a
    #: virtual machine whose idle CPUs halt, waking a thread asleep on another CPU costs the
    #: waker 100-300 us (an inter-processor interrupt), and a null prediction crosses four
    #: such wake-ups; on this project's 2-core VM, 0.001 halved null p50 latency at one
    #: client (benchmarks/README.rst).  At most one thread of the server process spins for
    #: worker answers, and one for requests, at a time; each wait burns at most this much
    #: CPU.  Not used with a single usable CPU, where the spinner would hold the CPU its
    #: peer needs (see :meth:`spin_window`).  0 turns it off.
    spin_wait: float = dataclasses.field(default=0.001, metadata=_env(
        "MINICOG_SPIN_WAIT", cast=float, check=lambda v: 0 <= v <= 0.1))
    #: Seconds a request thread waits for a sync prediction itself (reading the worker's
    #: answer on its own thread) before parking the connection: a fast prediction then
    #: skips three thread hand-offs; a slower one holds a pool thread at most this long.
    sync_inline_wait: float = 0.005
    #: Longest prediction id accepted (URL or body); longer → 400.
    max_prediction_id_chars: int = 256

    #: Serve the browser page at /docs (and link it from / for browsers); off for servers
    #: that must expose only Cog's API (also ``serve --no-docs``).
    docs: bool = dataclasses.field(default=True, metadata=_env("MINICOG_DOCS", cast=_bool))

    # --- Worker and slots -----------------------------------------------------------
    #: Number of prediction slots; overrides cog.yaml concurrency.max and @concurrent.
    #: None means "not set" (then cog.yaml, then the decorator, then 1).
    max_concurrency: Optional[int] = dataclasses.field(default=None, metadata=_env("COG_MAX_CONCURRENCY", cast=int, check=lambda v: v >= 1))
    #: Worker processes serving the model, each with its own slots: a number, or "auto"
    #: (one per device when CUDA_VISIBLE_DEVICES lists several, else one per CPU core).
    workers: str = dataclasses.field(default="1", metadata=_env("MINICOG_WORKERS", check=lambda v: v == "auto" or (v.isdigit() and int(v) >= 1)))
    #: Slot channels the engine opens when only ``@concurrent(max=N)`` can tell the slot
    #: count (no COG_MAX_CONCURRENCY, no cog.yaml value); a larger N is capped to this.
    slot_channel_limit: int = 64
    #: Seconds setup() may take before health says SETUP_FAILED; None = unbounded (Cog's default).
    #: Counted from the worker's spawn, so interpreter start-up and importing the model file
    #: count too, not only setup() itself; when it expires the worker is killed.
    setup_timeout: Optional[float] = dataclasses.field(default=None, metadata=_env("COG_SETUP_TIMEOUT", cast=float, check=lambda v: v > 0))
    #: Passed to setup(weights=...) when setup() takes a weights parameter.
    weights: Optional[str] = dataclasses.field(default=None, metadata=_env("COG_WEIGHTS"))
    #: Seconds a canceled prediction may keep running before the worker is killed and respawned.
    cancel_grace_period: float = dataclasses.field(default=5.0, metadata=_env("MINICOG_CANCEL_GRACE_PERIOD", cast=float, check=lambda v: v > 0))
    #: Seconds between two SIGUSR1 a sync worker sends its main thread for one cancel, until
    #: the CancelationException is raised: a signal that lands just before a blocking call
    #: (time.sleep, a read) starts is handled only when that call returns, so it is resent.
    cancel_resignal_interval: float = 0.05
    #: Seconds the worker gets to exit after the shutdown message before it is killed.
    worker_stop_timeout: float = 10.0
    #: Worker deaths tolerated within ``worker_restart_window`` seconds; one more → DEFUNCT.
    max_worker_restarts: int = dataclasses.field(default=3, metadata=_env("MINICOG_MAX_WORKER_RESTARTS", cast=int, check=lambda v: v >= 0))
    worker_restart_window: float = 300.0
    #: JSON payloads (inputs, output items) larger than this many bytes travel through a
    #: temporary file instead of the channel (coglet's MAX_INLINE_IPC_SIZE).
    max_inline_ipc_bytes: int = 6 * MiB
    #: A single log line longer than this many bytes is cut and marked (coglet's bound).
    max_log_line_bytes: int = 4 * MiB
    #: Seconds a complete log line may wait in the worker to be sent with the lines that
    #: follow it (one frame instead of one per line: a flood of prints costs a few hundred
    #: frames, not a million).  Lines written before an output, a metric or the end of
    #: the prediction are always sent before it.  0 sends each write's lines at once.
    log_batch_interval: float = dataclasses.field(default=0.02, metadata=_env(
        "MINICOG_LOG_BATCH_INTERVAL", cast=float, check=lambda v: 0 <= v <= 5))
    #: Characters of log text a batch may hold before it is sent without waiting.
    log_batch_chars: int = 256 * KiB

    #: Seconds after which a prediction without a Cancel-After header is canceled (a server-wide
    #: deadline); a duration such as 30s, 10m, 1h30m or a number of seconds.  None = no deadline.
    default_deadline: Optional[float] = dataclasses.field(default=None, metadata=_env("MINICOG_DEFAULT_DEADLINE", cast=parse_duration))
    #: Threads that run timed work (deadlines, ``Prefer: wait`` answers); each task is tiny.
    timer_threads: int = 2
    #: Worker recycling: a worker past one of these limits stops taking predictions, finishes
    #: the ones it runs and is replaced by a fresh one (setup runs again); one at a time.
    #: Predictions a worker may run before it is recycled; None = no limit.
    worker_max_predictions: Optional[int] = dataclasses.field(default=None, metadata=_env("MINICOG_WORKER_MAX_PREDICTIONS", cast=int, check=lambda v: v >= 1))
    #: Seconds since a worker was spawned after which it is recycled (checked between predictions).
    worker_max_age: Optional[float] = dataclasses.field(default=None, metadata=_env("MINICOG_WORKER_MAX_AGE", cast=float, check=lambda v: v > 0))
    #: Resident memory (MiB) of a worker past which it is recycled (checked between predictions).
    worker_max_rss: Optional[float] = dataclasses.field(default=None, metadata=_env("MINICOG_WORKER_MAX_RSS", cast=float, check=lambda v: v > 0))

    # --- Healthcheck ----------------------------------------------------------------
    #: Seconds the user's healthcheck() may run (Cog: 5 s).
    healthcheck_timeout: float = 5.0
    #: Seconds the parent waits for the worker's healthcheck answer before calling it unhealthy.
    healthcheck_parent_timeout: float = 10.0

    # --- SSE ------------------------------------------------------------------------
    #: Events kept per prediction so a reconnecting client can replay them; 0 = none.
    stream_history_capacity: int = dataclasses.field(default=1024, metadata=_env("COG_STREAM_HISTORY_CAPACITY", cast=int, check=lambda v: v >= 0))
    #: Events a subscriber may fall behind before it gets the "lagged" error and is dropped.
    stream_subscriber_queue: int = 1024
    #: Concurrent SSE subscribers per prediction; more → 429.
    max_stream_subscribers: int = 1024
    #: Seconds of silence after which an SSE stream gets a ": keep-alive" comment.
    sse_keepalive_interval: float = 15.0

    # --- Webhooks -------------------------------------------------------------------
    #: Minimum seconds between two non-terminal start/logs webhooks of one prediction.
    throttle_response_interval: float = dataclasses.field(default=0.5, metadata=_env("COG_THROTTLE_RESPONSE_INTERVAL", cast=float, check=lambda v: v >= 0))
    webhook_auth_token: Optional[str] = dataclasses.field(default=None, metadata=_env("WEBHOOK_AUTH_TOKEN"))
    #: Seconds one webhook attempt may take.
    webhook_timeout: float = 30.0
    #: Retries of the terminal webhook after the first attempt (Cog: 12).
    webhook_max_retries: int = dataclasses.field(default=12, metadata=_env("MINICOG_WEBHOOK_MAX_RETRIES", cast=int, check=lambda v: v >= 0))
    #: Backoff before retry k is webhook_backoff_base * 2 ** min(k, webhook_backoff_max_exponent) seconds.
    webhook_backoff_base: float = dataclasses.field(default=0.1, metadata=_env("MINICOG_WEBHOOK_BACKOFF_BASE", cast=float, check=lambda v: v >= 0))
    webhook_backoff_max_exponent: int = 10
    #: Non-terminal webhooks waiting for a slow receiver, per prediction; beyond it the
    #: oldest is dropped (each carries a full snapshot, so only intermediate states go).
    webhook_queue_limit: int = 100
    #: Bytes of a receiver's answer read before the connection is dropped (only the status counts).
    webhook_max_response_bytes: int = 64 * KiB
    #: Threads delivering webhooks (all predictions share them; a retry waiting for its
    #: backoff holds no thread).  A receiver that stalls holds one for up to webhook_timeout.
    webhook_workers: int = dataclasses.field(default=8, metadata=_env("MINICOG_WEBHOOK_WORKERS", cast=int, check=lambda v: v >= 1))
    #: Threads writing terminal webhooks to the outbox when no waiting request thread does.
    webhook_outbox_writers: int = 2
    #: Bytes after which the outbox starts a new segment file; a segment is deleted once
    #: every webhook in it is delivered or given up.
    webhook_outbox_segment_bytes: int = 64 * MiB
    #: Seconds a webhook or outbox thread stays idle before it ends (new ones start on demand).
    webhook_pool_idle_timeout: float = 30.0
    #: Standard Webhooks signing secret, ``whsec_`` + base64 of the key (Replicate's form).  When
    #: set, every webhook carries ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``.
    #: None = unsigned (``webhook-id`` and ``webhook-timestamp`` are sent anyway).
    webhook_secret: Optional[str] = dataclasses.field(default=None, repr=False, metadata={**_env("MINICOG_WEBHOOK_SECRET", cast=_webhook_secret), "secret": True})
    #: Directory where terminal webhooks wait (fsynced) until delivered, so they survive a crash
    #: or restart; None = in memory only.  One directory per server process.
    webhook_outbox: Optional[str] = dataclasses.field(default=None, metadata=_env("MINICOG_WEBHOOK_OUTBOX", check=lambda v: bool(v.strip())))

    # --- Metrics --------------------------------------------------------------------
    #: Serve Prometheus metrics at GET /metrics; off → 404 (for servers that must not expose it).
    metrics_enabled: bool = dataclasses.field(default=True, metadata=_env("MINICOG_METRICS", cast=_bool))

    # --- Files ----------------------------------------------------------------------
    #: User-Agent sent when fetching URL inputs.
    user_agent: Optional[str] = dataclasses.field(default=None, metadata=_env("COG_USER_AGENT"))
    #: Seconds a URL input fetch may stall (per socket operation, as requests' timeout=10).
    download_timeout: float = dataclasses.field(default=10.0, metadata=_env("MINICOG_DOWNLOAD_TIMEOUT", cast=float, check=lambda v: v > 0))
    #: Largest URL or data: input accepted, in bytes.
    max_download_bytes: int = dataclasses.field(default=1024 * MiB, metadata=_env("MINICOG_MAX_DOWNLOAD_BYTES", cast=int, check=lambda v: v > 0))
    #: Seconds one output upload to --upload-url may take.
    upload_timeout: float = 25.0
    #: Where per-prediction temporary folders go; None = tempfile.gettempdir().
    tmp_dir: Optional[str] = dataclasses.field(default=None, metadata=_env("MINICOG_TMPDIR"))

    # --- Finished predictions ------------------------------------------------------
    #: Seconds a finished prediction stays readable (GET /predictions/{id}, a PUT of its id
    #: returns it instead of running it again, SSE replay after the end), with its output
    #: files; 0 = forget it at once, as coglet does.  10 minutes.
    retention_seconds: float = dataclasses.field(default=600.0, metadata=_env("MINICOG_RETENTION_SECONDS", cast=float, check=lambda v: v >= 0))
    #: Most finished predictions kept at once (records); the oldest goes first.  0 = none.
    retention_max_records: int = dataclasses.field(default=1000, metadata=_env("MINICOG_RETENTION_MAX_RECORDS", cast=int, check=lambda v: v >= 0))

    # --- Shutdown and probes --------------------------------------------------------
    #: Seconds in-flight predictions and pending terminal webhooks get after SIGTERM.
    shutdown_grace_period: float = dataclasses.field(default=30.0, metadata=_env("MINICOG_SHUTDOWN_GRACE_PERIOD", cast=float, check=lambda v: v >= 0))
    #: Readiness file created once ready when running under Kubernetes (as coglet).
    readiness_file: str = "/var/run/cog/ready"
    #: Set when running under Kubernetes; enables the readiness file.
    kubernetes_service_host: Optional[str] = dataclasses.field(default=None, metadata=_env("KUBERNETES_SERVICE_HOST"))

    # --- Logging --------------------------------------------------------------------
    log_level: str = dataclasses.field(default="info", metadata=_env("COG_LOG_LEVEL", check=lambda v: v.lower() in ("debug", "info", "warn", "warning", "error")))

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "Settings":
        """Build settings from defaults, then *environ* (default ``os.environ``), then *overrides*.

        An unparsable or out-of-range variable is ignored with a warning naming it.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            meta = field.metadata
            name = meta.get("env")
            if not name or name not in environ:
                continue
            raw = environ[name]
            if raw == "" and meta["cast"] is not str:
                continue
            try:
                value = meta["cast"](raw)
                if not meta["check"](value):
                    raise ValueError("out of range")
            except (TypeError, ValueError):
                # Never echo a secret into the log.
                shown = "(value hidden)" if meta.get("secret") else repr(raw)
                log.warning("Invalid %s value %s, using the default %r", name, shown, field.default)
                continue
            values[field.name] = value
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        """A copy with *changes* applied."""
        return dataclasses.replace(self, **changes)

    def spin_window(self) -> float:
        """:attr:`spin_wait`, or 0 when this process may use only one CPU."""
        if self.spin_wait <= 0:
            return 0.0
        return self.spin_wait if _usable_cpus() > 1 else 0.0

    @classmethod
    def environment_variables(cls) -> dict[str, str]:
        """Map of environment variable → field name, for documentation and --help."""
        return {f.metadata["env"]: f.name for f in dataclasses.fields(cls) if "env" in f.metadata}


#: Seconds ``predict``/``run``/``train`` wait for setup() when ``--setup-timeout`` is not
#: given: the default of Cog's flag (pkg/cli/predict.go ``addSetupTimeoutFlag``, 5 minutes).
CLI_SETUP_TIMEOUT = 300
