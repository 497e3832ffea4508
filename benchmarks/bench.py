"""Side-by-side benchmark: minicog's HTTP server against coglet 0.23.1.

Run from the repository root::

    python benchmarks/bench.py --quick          # small counts, well under a minute
    python benchmarks/bench.py                  # the full run, a few minutes at most
    python benchmarks/bench.py --servers coglet # one side only

Scenarios run one after another, each against minicog then coglet
(interleaved, so background load on the machine falls on both alike).  Every
scenario starts a fresh server (so peak-memory figures belong to that scenario
alone) from a temporary working folder, drives it with the standard-library
load generator in ``loadgen.py`` over 127.0.0.1, then stops it with SIGTERM
(SIGKILL by PID for anything left after a grace period).  The scenarios, each
one predictor in ``benchmarks/predictors/``:

``null``   a run() that returns a constant: latency p50/p99 and throughput at
           client concurrency 1 (sync requests, one keep-alive connection).
``async``  ``@concurrent(max=8)`` async run() doing ``await asyncio.sleep(0)`` at
           client concurrency 8; the 409 (all slots busy) answers are counted,
           since a client that waits for its answer should never see one.
``sse``    a ``@streaming`` generator of 10,000 tokens read as Server-Sent Events:
           tokens per second over the whole request and time to first token.
``file``   a 100 MB ``Path`` output returned as a ``data:`` URI: time, and peak
           memory of the server's process tree (parent + worker).
``cold``   spawn → GET /health-check says READY, repeated; idle memory of the
           tree is read on each of those servers once READY.
``steady`` the null predictor again, steady state: both servers up at once, each
           warmed, then short bursts at client concurrency 1 taken in turn
           (minicog, coglet, coglet, minicog, ...).  Each side's figure is the
           median over its bursts, and the paired ratio is the median over rounds
           of minicog's burst against coglet's burst next to it.  ``null`` is one
           burst on a server just started, so it also measures its first
           thousand requests and the CPUs that server's processes happened to
           land on; the paired bursts see both servers under the same machine
           state, minute by minute (benchmarks/README.rst).

Memory is summed over the server's process tree read from ``/proc``: VmHWM
(per-process high-water mark, so short spikes are not missed), a sampled VmRSS
sum (simultaneous peak), and PSS for idle memory (shared pages counted once).

coglet runs from its own virtual environment (``--coglet-venv`` or
``$COGLET_VENV``, default ``../.venv-coglet`` next to the checkout), made with::

    python3.11 -m venv DIR && DIR/bin/pip install cog==0.23.1 coglet==0.23.1

(``--install-coglet`` does exactly that).  coglet is started the way Cog's
images start it: ``COG_PREDICT_TYPE_STUB=path.py:Runner PORT=N python -m
cog.server.http``, with ``DIR/bin`` first on PATH because coglet spawns its
worker with the first ``python`` found there, ``COG_MAX_CONCURRENCY`` for the
slot count (what Cog's build bakes in from ``@concurrent``), and a
``.cog/openapi_schema.json`` in its working folder (what Cog's build writes) so
that it validates inputs and allows SSE.  minicog is started with
``python -m minicog serve --predictor path.py:Runner`` and reads all of that
from the predictor itself.  Its ``python`` is that of a bare venv of the
benchmark's own interpreter (``--minicog-venv``, default ``../.venv-minicog``,
made with ``python -m venv --without-pip`` when missing; minicog needs no
packages), so that both servers start from a venv and neither pays for ``.pth``
files of the host interpreter (``--minicog-python`` overrides).

Results are printed as a table with the ratio minicog/coglet per metric and
the goal it is held to, and written as JSON (``benchmarks/results/latest.json``
for a full run).  This file is never collected by the test suite; the pure
helpers it relies on are tested in ``tests/test_benchmarks.py``.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import loadgen  # noqa: E402  (benchmarks/ is not a package; see sys.path above)

__all__ = ["main", "SCENARIOS", "COMPARISON"]

PREDICTORS = os.path.join(HERE, "predictors")
HOST = "127.0.0.1"
SSE_TOKENS = 10_000
FILE_MB = 100
#: Size of the data: URI text of the ``datauri`` scenario's input, and its decoded bytes.
DATA_URI_MB = 70
DATA_URI_BYTES = DATA_URI_MB * 1000 * 1000 * 3 // 4
#: Megabytes the ``logs`` scenario's prediction prints, in lines of LOG_WIDTH characters.
LOG_MB = 50
LOG_WIDTH = 100
MiB = 1024 * 1024

# ----------------------------------------------------------------------------------------
# Scenarios and the schema Cog's build step would have written for coglet


def _cog_schema(inputs: dict[str, Any], output: dict[str, Any], streaming: bool = False) -> dict[str, Any]:
    """The parts of Cog's build-time OpenAPI document coglet reads at run time: the
    Input and Output components (validation, output wrapping) and x-cog-streaming."""
    post: dict[str, Any] = {
        "summary": "Predict",
        "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}}},
        "responses": {"200": {"description": "Successful Response"}},
    }
    if streaming:
        post["x-cog-streaming"] = True
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.23.1"},
        "paths": {"/predictions": {"post": post}},
        "components": {
            "schemas": {
                "Input": {"title": "Input", "type": "object", "properties": inputs},
                "Output": dict(output, title="Output"),
                "PredictionRequest": {
                    "title": "PredictionRequest",
                    "type": "object",
                    "properties": {"id": {"title": "Id", "type": "string"}, "input": {"$ref": "#/components/schemas/Input"}},
                },
            }
        },
    }


SCENARIOS: dict[str, dict[str, Any]] = {
    "null": {
        "predictor": "bench_null.py:Runner",
        "coglet_env": {},
        "schema": _cog_schema({}, {"type": "string"}),
    },
    "async": {
        "predictor": "bench_async_sleep.py:Runner",
        "coglet_env": {"COG_MAX_CONCURRENCY": "8"},
        "schema": _cog_schema({}, {"type": "string"}),
    },
    "sse": {
        "predictor": "bench_sse_tokens.py:Runner",
        "coglet_env": {},
        "schema": _cog_schema(
            {"n": {"title": "N", "type": "integer", "default": SSE_TOKENS, "minimum": 1, "maximum": 1000000, "x-order": 0}},
            {"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"},
            streaming=True,
        ),
    },
    "cpu": {
        "predictor": "bench_cpu.py:Runner",
        "coglet_env": {},
        "schema": _cog_schema({}, {"type": "integer"}),
    },
    "file": {
        "predictor": "bench_file_output.py:Runner",
        "coglet_env": {},
        "schema": _cog_schema(
            {"size_mb": {"title": "Size Mb", "type": "integer", "default": FILE_MB, "minimum": 1, "maximum": 1024, "x-order": 0}},
            {"type": "string", "format": "uri"},
        ),
    },
    "datauri": {
        "predictor": "bench_data_uri_input.py:Runner",
        "coglet_env": {},
        "schema": _cog_schema({"file": {"title": "File", "type": "string", "format": "uri", "x-order": 0}},
                              {"type": "integer"}),
    },
    "logs": {
        "predictor": "bench_log_flood.py:Runner",
        "coglet_env": {},
        "schema": _cog_schema(
            {"mb": {"title": "Mb", "type": "integer", "default": LOG_MB, "minimum": 1, "maximum": 1024, "x-order": 0},
             "width": {"title": "Width", "type": "integer", "default": LOG_WIDTH, "minimum": 1, "maximum": 100000,
                       "x-order": 1}},
            {"type": "integer"},
        ),
    },
}

# (metric path, label, unit, goal) — goal is (kind, value): "ge"/"le"/"lt" compare the ratio
# minicog/coglet, "zero" requires minicog's figure to be 0, None is informational.
COMPARISON: list[tuple[str, str, str, Optional[tuple[str, float]]]] = [
    ("null.throughput_rps", "null c=1 throughput", "req/s", ("ge", 1.0)),
    ("null.p50_ms", "null c=1 latency p50", "ms", ("le", 1.0)),
    ("null.p99_ms", "null c=1 latency p99", "ms", ("le", 1.0)),
    ("null.count_409", "null c=1 409 answers", "", None),
    ("steady.throughput_rps", "null c=1 steady, paired bursts: throughput", "req/s", ("ge", 2.0)),
    ("steady.p50_ms", "null c=1 steady, paired bursts: latency p50", "ms", ("le", 0.5)),
    ("steady.p99_ms", "null c=1 steady, paired bursts: latency p99", "ms", None),
    ("async.throughput_rps", "async sleep(0) c=8 throughput", "req/s", None),
    ("async.p50_ms", "async sleep(0) c=8 latency p50", "ms", None),
    ("async.p99_ms", "async sleep(0) c=8 latency p99", "ms", None),
    ("async.count_409", "async sleep(0) c=8 409 answers", "", ("zero", 0)),
    ("sse.tokens_per_s", "SSE 10k tokens: tokens/s", "tok/s", ("ge", 1.0)),
    ("sse.ttft_ms", "SSE 10k tokens: time to 1st token", "ms", None),
    ("cpu.throughput_rps", "CPU 20 ms sync c=2, 1 worker: throughput", "req/s", None),
    ("cpu2.throughput_rps", "CPU 20 ms sync c=2, 2 workers: throughput", "req/s", None),
    ("file.time_s", "100 MB file output: time", "s", None),
    ("file.peak_mb", "100 MB file output: peak tree memory", "MB", ("le", 0.5)),
    ("datauri.time_s", "70 MB data: URI input: time", "s", None),
    ("datauri.peak_mb", "70 MB data: URI input: peak tree memory", "MB", None),
    ("datauri.peak_over_input", "70 MB data: URI input: peak / input size", "x", None),
    ("logs.time_s", "50 MB of logs in one prediction: time", "s", ("le", 1.0)),
    ("logs.peak_mb", "50 MB of logs in one prediction: peak tree memory", "MB", None),
    ("overload.c8.throughput_rps", "8 slots, 8 clients: successes", "req/s", None),
    ("overload.c32.throughput_rps", "8 slots, 32 clients: successes", "req/s", ("ge", 1.0)),
    ("overload.c32.p99_ms", "8 slots, 32 clients: p99 of successes", "ms", None),
    ("overload.c32.count_409", "8 slots, 32 clients: 409 answers", "", None),
    ("overload.c32_over_c8", "8 slots: 32-client / 8-client successes", "", None),
    ("idleconn.threads", "2,000 idle/slow connections: threads", "", None),
    ("idleconn.rss_growth_mb", "2,000 idle/slow connections: RSS growth", "MB", None),
    ("cold.median_s", "cold start to READY (median)", "s", ("lt", 1.0)),
    ("idle.rss_mb", "idle tree memory (RSS)", "MB", ("lt", 1.0)),
    ("idle.pss_mb", "idle tree memory (PSS)", "MB", None),
]

# ----------------------------------------------------------------------------------------
# Server processes


def free_port() -> int:
    """A port the kernel just gave out on 127.0.0.1 (tiny race; both servers need a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """The caller's environment without Cog/minicog knobs that would skew a run."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("COG_", "MINICOG_")) and k != "PORT"}


class Server:
    """One server process (minicog or coglet) serving one scenario's predictor."""

    def __init__(self, kind: str, scenario: str, args: argparse.Namespace, extra: Optional[list[str]] = None):
        self.extra = list(extra or [])  # more minicog serve flags (e.g. --workers 2)
        self.kind = kind
        self.scenario = scenario
        self.args = args
        self.port = free_port()
        self.workdir = tempfile.mkdtemp(prefix=f"minicog-bench-{kind}-{scenario}-")
        self.log_path = os.path.join(self.workdir, "server.log")
        self.popen: Optional[subprocess.Popen] = None
        self.spawned_at = 0.0

    def command(self) -> tuple[list[str], dict[str, str]]:
        spec = SCENARIOS[self.scenario]
        ref = os.path.join(PREDICTORS, spec["predictor"])
        env = _clean_env()
        env["BENCH_OUTPUT_DIR"] = self.workdir
        if self.kind == "minicog":
            env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            env.update(self.args.minicog_env)
            argv = [self.args.minicog_python, "-m", "minicog", "serve", "--predictor", ref,
                    "--host", HOST, "--port", str(self.port), *self.extra]
            return argv, env
        venv_bin = os.path.join(self.args.coglet_venv, "bin")
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        env.pop("PYTHONPATH", None)  # coglet must not pick up this checkout's packages
        env["COG_PREDICT_TYPE_STUB"] = ref
        env["PORT"] = str(self.port)
        env.update(spec["coglet_env"])
        os.makedirs(os.path.join(self.workdir, ".cog"))
        with open(os.path.join(self.workdir, ".cog", "openapi_schema.json"), "w") as fh:
            json.dump(spec["schema"], fh)
        return [os.path.join(venv_bin, "python"), "-m", "cog.server.http", "--host", HOST], env

    def start(self) -> "Server":
        argv, env = self.command()
        log = open(self.log_path, "wb")
        try:
            self.spawned_at = time.perf_counter()
            self.popen = subprocess.Popen(argv, env=env, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()  # the child holds its own descriptor
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def wait_ready(self, timeout: float) -> float:
        """Seconds from spawn to the first READY health answer."""
        try:
            loadgen.wait_ready(HOST, self.port, timeout=timeout, alive=lambda: self.popen.poll() is None)
        except loadgen.ServerNotReady as exc:
            raise loadgen.ServerNotReady(f"{self.kind} ({self.scenario}): {exc}\n--- server log tail ---\n{self.log_tail()}") from None
        return time.perf_counter() - self.spawned_at

    def log_tail(self, size: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - size))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> Optional[int]:
        """SIGTERM the server, wait *grace* seconds, then SIGKILL what is left of its tree
        (by the PIDs recorded before the stop), and remove the working folder."""
        code = None
        if self.popen is not None:
            tree = loadgen.process_tree(self.popen.pid)
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
            try:
                code = self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                code = self.popen.wait(timeout=5)
            deadline = time.monotonic() + 5.0
            for pid in tree[1:]:
                # Give descendants a moment to exit on their own after their parent did.
                while os.path.exists(f"/proc/{pid}") and _is_running(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                if _is_running(pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.popen = None
        shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _is_running(pid: int) -> bool:
    """True for a live, non-zombie process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X", "")


def _mb(kb: Optional[int]) -> Optional[float]:
    return None if kb is None else round(kb / 1024.0, 1)


# ----------------------------------------------------------------------------------------
# Scenarios


def run_cold_and_null(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """Cold starts (with idle memory on each READY server), then the null load on the last."""
    starts: list[float] = []
    idle: list[dict[str, Any]] = []
    null: dict[str, Any] = {}
    for i in range(p["cold_starts"]):
        server = Server(kind, "null", args).start()
        try:
            starts.append(server.wait_ready(args.ready_timeout))
            time.sleep(p["settle_s"])  # let start-up garbage settle before reading idle memory
            idle.append(loadgen.tree_memory(server.pid))
            if i == p["cold_starts"] - 1:
                loadgen.run_load(HOST, server.port, concurrency=1, requests=p["warmup"], duration=10)
                null = loadgen.run_load(HOST, server.port, concurrency=1, requests=p["null_requests"], duration=p["duration_s"])
        finally:
            server.stop()
    return {
        "cold": {"runs_s": [round(s, 3) for s in starts], "median_s": round(statistics.median(starts), 3)},
        "idle": {
            "rss_mb": _mb(statistics.median(m["rss_kb"] for m in idle)),
            "pss_mb": _mb(statistics.median(m["pss_kb"] for m in idle)) if all(m["pss_kb"] is not None for m in idle) else None,
            "processes": len(idle[-1]["pids"]),
        },
        "null": null,
    }


def summarize_bursts(bursts: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's steady-state figures: the median over its bursts (``run_load`` results)."""
    def median_of(key: str) -> Optional[float]:
        values = [b[key] for b in bursts if isinstance(b.get(key), (int, float))]
        return round(statistics.median(values), 3) if values else None

    return {
        "bursts": len(bursts),
        "throughput_rps": median_of("throughput_rps"),
        "p50_ms": median_of("p50_ms"),
        "p99_ms": median_of("p99_ms"),
        "burst_throughput_rps": [b.get("throughput_rps") for b in bursts],
        "count_409": sum(int(b.get("count_409") or 0) for b in bursts),
        "statuses": _merge_counts(b.get("statuses", {}) for b in bursts),
        "errors": [e for b in bursts for e in b.get("errors", [])][:5],
        "timed_out": any(b.get("timed_out") for b in bursts),
    }


def _merge_counts(counts: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + n
    return total


def paired_ratios(mine: list[Optional[float]], theirs: list[Optional[float]],
                  goal: float = 2.0) -> Optional[dict[str, float]]:
    """Round-by-round ratios mine/theirs (a round missing either figure is skipped):
    their median, lowest and highest, and how many rounds reached *goal*."""
    ratios = [m / t for m, t in zip(mine, theirs) if m and t]
    if not ratios:
        return None
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3), "max": round(max(ratios), 3),
            "rounds": len(ratios), "goal": goal, "rounds_met": sum(r >= goal for r in ratios)}


def bursts_in_turns(servers: dict[str, Server], args: argparse.Namespace, *, concurrency: int, warmup: int,
                    rounds: int, requests: int, duration: float) -> dict[str, list[dict[str, Any]]]:
    """Start *servers* side by side, warm each, then give each one burst per round in
    turns (a, b, b, a, ...: a drift of the machine within a round falls on both);
    every server is stopped at the end.  The ``run_load`` result of each burst, by name."""
    bursts: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    order = list(servers.items())
    try:
        for _, server in order:
            server.start()
        for _, server in order:
            server.wait_ready(args.ready_timeout)
            loadgen.run_load(HOST, server.port, concurrency=concurrency, requests=warmup, duration=30)
        for round_no in range(rounds):
            for name, server in (order if round_no % 2 == 0 else order[::-1]):
                bursts[name].append(loadgen.run_load(HOST, server.port, concurrency=concurrency,
                                                     requests=requests, duration=duration))
    finally:
        for _, server in order:
            server.stop()
    return bursts


def run_steady_null(kinds: list[str], args: argparse.Namespace, p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The null predictor on every kind at once: a warm-up, then alternating bursts."""
    bursts = bursts_in_turns({kind: Server(kind, "null", args) for kind in kinds}, args, concurrency=1,
                             warmup=p["steady_warmup"], rounds=p["steady_rounds"], requests=p["steady_burst"],
                             duration=p["duration_s"])
    out = {kind: summarize_bursts(b) for kind, b in bursts.items()}
    if "minicog" in out and "coglet" in out:
        out["minicog"]["paired_throughput_ratio"] = paired_ratios(
            out["minicog"]["burst_throughput_rps"], out["coglet"]["burst_throughput_rps"])
    return out


def run_async(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    with Server(kind, "async", args).start() as server:
        server.wait_ready(args.ready_timeout)
        loadgen.run_load(HOST, server.port, concurrency=8, requests=p["warmup"], duration=10)
        return loadgen.run_load(HOST, server.port, concurrency=8, requests=p["async_requests"], duration=p["duration_s"])


def run_sse(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    expect = [f"t{i} " for i in range(SSE_TOKENS)]
    with Server(kind, "sse", args).start() as server:
        server.wait_ready(args.ready_timeout)
        loadgen.stream_sse(HOST, server.port, body={"input": {"n": 50}}, timeout=30)  # warm-up
        runs = []
        for _ in range(p["sse_runs"]):
            server.wait_ready(30)  # READY, not BUSY: a run that failed may still hold its slot
            runs.append(loadgen.stream_sse(HOST, server.port, body={"input": {"n": SSE_TOKENS}}, timeout=120, expect=expect))
    good = [r for r in runs if r["ok"]]
    return {
        "ok_runs": len(good),
        "runs": runs,
        "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in good), 1) if good else None,
        "ttft_ms": round(statistics.median(r["ttft_ms"] for r in good), 3) if good else None,
    }


def run_file(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    min_bytes = FILE_MB * MiB * 4 // 3  # base64 of the file, at least
    with Server(kind, "file", args).start() as server:
        server.wait_ready(args.ready_timeout)
        before = loadgen.tree_memory(server.pid)
        with loadgen.TreeMemorySampler(server.pid, interval=0.01) as sampler:
            runs = []
            for _ in range(p["file_runs"]):
                server.wait_ready(30)
                runs.append(loadgen.fetch_large(HOST, server.port, body={"input": {"size_mb": FILE_MB}}, timeout=180, min_bytes=min_bytes))
        after = loadgen.tree_memory(server.pid)
    good = [r for r in runs if r["ok"]]
    peak_kb = max(after["hwm_kb"], sampler.peak_rss_kb)
    return {
        "ok_runs": len(good),
        "runs": runs,
        "time_s": round(statistics.median(r["time_s"] for r in good), 3) if good else None,
        "peak_mb": _mb(peak_kb) if good else None,
        "peak_hwm_sum_mb": _mb(after["hwm_kb"]),
        "peak_rss_sampled_mb": _mb(sampler.peak_rss_kb),
        "rss_before_mb": _mb(before["rss_kb"]),
        "samples": sampler.samples,
    }


def _data_uri_body() -> bytes:
    """The ``datauri`` request: ``{"input": {"file": "data:...;base64,<DATA_URI_MB MB>"}}``, built once."""
    raw = bytes(range(256)) * (DATA_URI_BYTES // 256 + 1)
    raw = raw[:DATA_URI_BYTES]
    return b'{"input": {"file": "data:application/octet-stream;base64,' + base64.b64encode(raw) + b'"}}'


def run_data_uri(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """One large data: URI input: time to the answer and peak memory of the server's tree."""
    body = _data_uri_body()
    runs = []
    with Server(kind, "datauri", args).start() as server:
        server.wait_ready(args.ready_timeout)
        before = loadgen.tree_memory(server.pid)
        with loadgen.TreeMemorySampler(server.pid, interval=0.01) as sampler:
            for _ in range(p["datauri_runs"]):
                server.wait_ready(30)
                r = loadgen.post_json_bytes(HOST, server.port, body, timeout=180)
                r["ok"] = r["ok"] and r.get("output") == DATA_URI_BYTES
                runs.append(r)
        after = loadgen.tree_memory(server.pid)
    good = [r for r in runs if r["ok"]]
    peak_kb = max(after["hwm_kb"], sampler.peak_rss_kb)
    input_mb = len(body) / MiB
    return {
        "ok_runs": len(good),
        "runs": runs,
        "input_mb": round(input_mb, 1),
        "time_s": round(statistics.median(r["time_s"] for r in good), 3) if good else None,
        "peak_mb": _mb(peak_kb) if good else None,
        "peak_over_input": round(peak_kb / 1024 / input_mb, 2) if good else None,
        "peak_hwm_sum_mb": _mb(after["hwm_kb"]),
        "peak_rss_sampled_mb": _mb(sampler.peak_rss_kb),
        "rss_before_mb": _mb(before["rss_kb"]),
    }


def run_logs(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """One prediction printing LOG_MB MB of lines: time to the (sync) answer, which carries the logs."""
    body = json.dumps({"input": {"mb": LOG_MB, "width": LOG_WIDTH}}).encode()
    expected = LOG_MB * MiB // (LOG_WIDTH + 1)
    runs = []
    with Server(kind, "logs", args).start() as server:
        server.wait_ready(args.ready_timeout)
        with loadgen.TreeMemorySampler(server.pid, interval=0.05) as sampler:
            for _ in range(p["logs_runs"]):
                server.wait_ready(60)
                r = loadgen.post_json_bytes(HOST, server.port, body, timeout=300)
                # The answer carries every line: the logs field is at least LOG_MB MB.
                r["ok"] = r["ok"] and r.get("output") == expected and r["response_bytes"] >= expected * (LOG_WIDTH + 1)
                runs.append(r)
        after = loadgen.tree_memory(server.pid)
    good = [r for r in runs if r["ok"]]
    return {
        "ok_runs": len(good),
        "runs": runs,
        "time_s": round(statistics.median(r["time_s"] for r in good), 3) if good else None,
        "peak_mb": _mb(max(after["hwm_kb"], sampler.peak_rss_kb)) if good else None,
    }


def run_cpu(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """~20 ms of pure-Python work per sync prediction, 2 clients: 1 worker, and for
    minicog also 2 workers (coglet has one worker; its second client gets 409s).

    minicog's two servers run side by side and are measured in turns, ``cpu_rounds``
    bursts each, so that the 2/1 ratio compares them under the same machine speed
    (which moved by a third between runs on the 2-core VM); each figure is the
    median burst, and ``scaling_paired`` the median of the per-round ratios.
    """
    variants = [("cpu", [])] + ([("cpu2", ["--workers", "2"])] if kind == "minicog" else [])
    # For a fixed time, not a request count: with one worker the second client's 409s
    # come back in microseconds and would use up any count in a few predictions' time
    # (400 requests ended after 8 successes).
    bursts = bursts_in_turns({name: Server(kind, "cpu", args, extra) for name, extra in variants}, args,
                             concurrency=2, warmup=p["warmup"], rounds=p["cpu_rounds"], requests=10**9,
                             duration=p["cpu_s"] / p["cpu_rounds"])
    out = {name: summarize_bursts(b) for name, b in bursts.items()}
    if "cpu2" in out and out["cpu"].get("throughput_rps"):
        out["cpu2"]["scaling"] = round(out["cpu2"]["throughput_rps"] / out["cpu"]["throughput_rps"], 3)
        out["cpu2"]["scaling_paired"] = paired_ratios(out["cpu2"]["burst_throughput_rps"],
                                                      out["cpu"]["burst_throughput_rps"], goal=1.7)
    return out


def run_overload(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """8 slots (the async predictor) under 8, then 32 closed-loop clients, each for a fixed
    time: successful predictions per second, and how much of its 8-client figure a server
    keeps when three clients in four are answered 409 and retry at once."""
    with Server(kind, "async", args).start() as server:
        server.wait_ready(args.ready_timeout)
        loadgen.run_load(HOST, server.port, concurrency=8, requests=p["warmup"], duration=10)
        c8 = loadgen.run_load(HOST, server.port, concurrency=8, requests=10**9, duration=p["overload_s"])
        c32 = loadgen.run_load(HOST, server.port, concurrency=32, requests=10**9, duration=p["overload_s"])
    ratio = None
    if c8.get("throughput_rps") and c32.get("throughput_rps") is not None:
        ratio = round(c32["throughput_rps"] / c8["throughput_rps"], 3)
    return {"c8": c8, "c32": c32, "c32_over_c8": ratio}


def _threads(pid: int) -> Optional[int]:
    return loadgen.read_status_kb(pid, "Threads")  # a plain count, read like the kB fields


def run_idle_connections(kind: str, args: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """Threads and memory of the server's tree with N connections open and doing nothing:
    half never send a byte (idle keep-alive clients), half sent the start of a request
    head and stall (slow clients).  A prediction must still succeed meanwhile."""
    n = p["idle_connections"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 256
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with Server(kind, "null", args).start() as server:
        server.wait_ready(args.ready_timeout)
        time.sleep(p["settle_s"])  # start-up garbage settles before the baseline
        before = loadgen.tree_memory(server.pid)
        threads_before = _threads(server.pid)
        socks: list[socket.socket] = []
        try:
            for i in range(n):
                s = socket.create_connection((HOST, server.port), timeout=10)
                socks.append(s)
                if i % 2:
                    s.sendall(b"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            time.sleep(2.0)  # the server accepts them and spawns whatever it spawns per connection
            held = loadgen.tree_memory(server.pid)
            threads_held = _threads(server.pid)
            check = loadgen.run_load(HOST, server.port, concurrency=1, requests=5, duration=30)
        finally:
            for s in socks:
                s.close()
    return {
        "connections": n,
        "threads_before": threads_before,
        "threads": threads_held,
        "rss_before_mb": _mb(before["rss_kb"]),
        "rss_mb": _mb(held["rss_kb"]),
        "rss_growth_mb": _mb(held["rss_kb"] - before["rss_kb"]),
        "prediction_ok": check.get("succeeded") == 5,
    }


STEPS = [("cold+null", run_cold_and_null), ("steady", run_steady_null), ("async", run_async), ("sse", run_sse),
         ("cpu", run_cpu), ("file", run_file), ("datauri", run_data_uri), ("logs", run_logs),
         ("overload", run_overload), ("idleconn", run_idle_connections)]
#: Steps that take every kind at once (their servers run side by side) and answer per kind.
PAIRED_STEPS = {"steady"}


def bench_all(kinds: list[str], args: argparse.Namespace, p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every scenario against every server kind, interleaved (scenario by scenario) so
    that background load on the machine falls on both sides alike.  A scenario that
    fails is recorded under ``failures`` and does not stop the others."""
    results: dict[str, dict[str, Any]] = {kind: {} for kind in kinds}
    for name, fn in STEPS:
        if args.only and not any(part in args.only for part in name.split("+")):
            continue
        if name in PAIRED_STEPS:
            t0 = time.monotonic()
            print(f"[{'+'.join(kinds)}] {name} ...", end="", flush=True)
            try:
                outs = fn(kinds, args, p)
            except Exception as exc:
                print(f" FAILED: {type(exc).__name__}: {exc}", flush=True)
                for kind in kinds:
                    results[kind].setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"[:4000]
                continue
            print(f" done in {time.monotonic() - t0:.1f}s", flush=True)
            for kind in kinds:
                results[kind][name] = outs[kind]
            continue
        for kind in kinds:
            result = results[kind]
            t0 = time.monotonic()
            print(f"[{kind}] {name} ...", end="", flush=True)
            try:
                out = fn(kind, args, p)
            except Exception as exc:  # a broken server must not hide the other side's figures
                print(f" FAILED: {type(exc).__name__}: {exc}", flush=True)
                result.setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"[:4000]
                continue
            print(f" done in {time.monotonic() - t0:.1f}s", flush=True)
            if name in ("cold+null", "cpu"):
                result.update(out)
            else:
                result[name] = out
    return results


# ----------------------------------------------------------------------------------------
# Comparison and output


def _lookup(result: dict[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def compare(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric: both figures, the ratio minicog/coglet, the goal and whether it is met."""
    rows = []
    for path, label, unit, goal in COMPARISON:
        mc = _lookup(results.get("minicog", {}), path)
        cg = _lookup(results.get("coglet", {}), path)
        ratio = round(mc / cg, 3) if isinstance(mc, (int, float)) and isinstance(cg, (int, float)) and cg else None
        met = None
        goal_text = ""
        if goal is not None:
            kind, bound = goal
            goal_text = {"ge": f"ratio >= {bound:g}", "le": f"ratio <= {bound:g}", "lt": f"ratio < {bound:g}", "zero": "minicog = 0"}[kind]
            if kind == "zero":
                met = None if mc is None else mc == 0
            elif ratio is not None:
                met = {"ge": ratio >= bound, "le": ratio <= bound, "lt": ratio < bound}[kind]
        rows.append({"metric": path, "label": label, "unit": unit, "minicog": mc, "coglet": cg,
                     "ratio": ratio, "goal": goal_text, "met": met})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "yes" if v else "NO"
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    header = ["metric", "unit", "minicog", "coglet", "minicog/coglet", "goal", "met"]
    body = [[r["label"], r["unit"], fmt(r["minicog"]), fmt(r["coglet"]), fmt(r["ratio"]), r["goal"], fmt(r["met"])] for r in rows]
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]
    sep = "  ".join("=" * w for w in widths)
    lines = [sep, "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), sep]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in body]
    lines.append(sep)
    return "\n".join(lines)


def problems(results: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable lines for every scenario or run that did not succeed (a "-" in the
    table always has a reason here)."""
    lines = []
    for kind, result in results.items():
        for name, error in result.get("failures", {}).items():
            lines.append(f"{kind} {name}: {error.splitlines()[0]}")
        for name in ("sse", "file"):
            for i, run in enumerate(result.get(name, {}).get("runs", [])):
                if not run.get("ok"):
                    why = run.get("error_event") or run.get("error") or f"status {run.get('status') or run.get('http_status')}"
                    lines.append(f"{kind} {name} run {i + 1}: {why}"[:300])
        for name in ("null", "steady", "async"):
            load = result.get(name) or {}
            other = {k: v for k, v in load.get("statuses", {}).items() if k not in ("200", "409")}
            if other or load.get("timed_out"):
                lines.append(f"{kind} {name}: unexpected answers {other} {load.get('errors', [])[:2]}"[:300])
    return lines


def _git_sha() -> Optional[str]:
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(python: str, code: str) -> Optional[str]:
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30, env=_clean_env())
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def install_coglet(venv: str) -> None:
    """Create *venv* with coglet 0.23.1 (the command in the module docstring)."""
    base = shutil.which("python3.11") or sys.executable
    subprocess.run([base, "-m", "venv", venv], check=True, timeout=300)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "cog==0.23.1", "coglet==0.23.1"], check=True, timeout=600)


def make_minicog_venv(venv: str) -> str:
    """A bare venv of this interpreter for minicog (stdlib only, so ``--without-pip``, no network).

    coglet runs from its own venv; running minicog from one too means neither pays
    for ``.pth`` files in the host interpreter's site-packages (on the machine of
    the recorded figures, one imports certifi at every interpreter start, ~45 ms,
    twice per minicog cold start: parent and worker).
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    return os.path.join(venv, "bin", "python")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark minicog's HTTP server against coglet 0.23.1 on 127.0.0.1.")
    parser.add_argument("--quick", action="store_true", help="small counts; finishes in well under a minute")
    parser.add_argument("--servers", default="minicog,coglet", help="comma-separated: minicog, coglet (default both)")
    parser.add_argument("--only", default="", help="comma-separated scenarios to run: cold, null, steady, async, sse, cpu, file, datauri, logs, overload, idleconn (default all)")
    parser.add_argument("--coglet-venv", default=os.environ.get("COGLET_VENV") or os.path.join(os.path.dirname(REPO), ".venv-coglet"),
                        help="virtual environment holding cog==0.23.1 and coglet==0.23.1 (env COGLET_VENV; default ../.venv-coglet)")
    parser.add_argument("--install-coglet", action="store_true", help="create --coglet-venv with pip first if it does not exist")
    parser.add_argument("--minicog-venv", default=os.environ.get("MINICOG_VENV") or os.path.join(os.path.dirname(REPO), ".venv-minicog"),
                        help="bare virtual environment (no packages: minicog needs none) whose python runs minicog, "
                             "made from this interpreter if missing (env MINICOG_VENV; default ../.venv-minicog)")
    parser.add_argument("--minicog-python", default=None,
                        help="interpreter that runs minicog (default: --minicog-venv's python, else this one)")
    parser.add_argument("--minicog-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the minicog server (repeatable), e.g. MINICOG_SLOT_WAIT=0")
    parser.add_argument("--output", default=None, help="JSON results file (default benchmarks/results/latest.json, latest-quick.json with --quick)")
    parser.add_argument("--ready-timeout", type=float, default=60.0, help="seconds a server may take to become READY")
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="run nothing: print the table of an earlier results file (the table is valid reStructuredText)")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = set(args.servers) - {"minicog", "coglet"}
    if bad:
        parser.error(f"unknown server(s): {', '.join(sorted(bad))}")
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    bad_env = [e for e in args.minicog_env if "=" not in e]
    if bad_env:
        parser.error(f"--minicog-env takes NAME=VALUE, not {bad_env[0]!r}")
    args.minicog_env = dict(e.split("=", 1) for e in args.minicog_env)
    if args.minicog_python is None:
        venv_python = os.path.join(args.minicog_venv, "bin", "python")
        args.minicog_python = venv_python if os.path.exists(venv_python) else sys.executable
    if args.output is None:
        args.output = os.path.join(HERE, "results", "latest-quick.json" if args.quick else "latest.json")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            doc = json.load(fh)
        print(format_table(compare(doc["results"])))
        for line in problems(doc["results"]):
            print("problem: " + line)
        return 0
    if "coglet" in args.servers and not os.path.exists(os.path.join(args.coglet_venv, "bin", "python")):
        if args.install_coglet:
            install_coglet(args.coglet_venv)
        else:
            print(f"coglet venv not found at {args.coglet_venv}; create it with --install-coglet or set COGLET_VENV", file=sys.stderr)
            return 2
    if "minicog" in args.servers and args.minicog_python == sys.executable \
            and not os.path.exists(os.path.join(args.minicog_venv, "bin", "python")) and "--minicog-python" not in (argv or sys.argv):
        args.minicog_python = make_minicog_venv(args.minicog_venv)
    if args.quick:
        p = {"cold_starts": 2, "settle_s": 0.3, "warmup": 10, "null_requests": 300, "async_requests": 400,
             "duration_s": 5.0, "sse_runs": 1, "file_runs": 1, "datauri_runs": 1, "logs_runs": 1, "overload_s": 3.0,
             "idle_connections": 2000, "cpu_s": 3.0, "cpu_rounds": 1,
             "steady_warmup": 50, "steady_rounds": 2, "steady_burst": 200}
    else:
        p = {"cold_starts": 5, "settle_s": 1.0, "warmup": 50, "null_requests": 3000, "async_requests": 4000,
             "duration_s": 20.0, "sse_runs": 11, "file_runs": 2, "datauri_runs": 2, "logs_runs": 2, "overload_s": 10.0,
             "idle_connections": 2000, "cpu_s": 16.0, "cpu_rounds": 8,
             "steady_warmup": 1000, "steady_rounds": 12, "steady_burst": 1000}
    started = time.monotonic()
    git_sha = _git_sha()  # the checkout may move while the benchmark runs: record what was started
    results = bench_all(args.servers, args, p)
    rows = compare(results)
    print()
    print(format_table(rows))
    cpu2 = results.get("minicog", {}).get("cpu2", {})
    if cpu2.get("scaling") is not None:
        print(f"\nminicog CPU-bound, 2 workers / 1 worker throughput: {cpu2['scaling']:.2f} (goal >= 1.7)")
    trouble = problems(results)
    if trouble:
        print("\nproblems:")
        for line in trouble:
            print("  " + line)
    doc = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "duration_s": round(time.monotonic() - started, 1),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "minicog": {"git": git_sha, "python": _version(args.minicog_python, "import sys; print(sys.version.split()[0])"),
                        "interpreter": args.minicog_python},
            "coglet": {
                "venv": args.coglet_venv,
                "version": _version(os.path.join(args.coglet_venv, "bin", "python"), "import coglet; print(coglet.__version__)")
                if "coglet" in args.servers else None,
            },
            "parameters": p,
            "minicog_env": args.minicog_env,
        },
        "results": results,
        "comparison": rows,
        "problems": trouble,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    print(f"\nresults written to {os.path.relpath(args.output)} in {doc['meta']['duration_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
