"""What signed and durable webhooks cost, and what failing webhooks hold (threads, memory).

Two scenarios, each against real servers on 127.0.0.1 and a loopback webhook receiver
in this process (the same for every configuration, so its cost falls on all alike):

``cost``
    Null predictions (``bench_null.py``), closed loop, each with a webhook
    (``webhook_events_filter: ["completed"]``, one webhook per prediction), on
    three minicog servers started side by side in one run and driven in
    interleaved rounds: ``plain`` (no secret, no outbox), ``signed``
    (``MINICOG_WEBHOOK_SECRET``) and ``signed+outbox`` (plus
    ``MINICOG_WEBHOOK_OUTBOX`` in the server's working folder, on the same disk as
    the checkout).  Reported: successful predictions per second (the client's
    view), the end-to-end rate (predictions / seconds until the receiver had
    every terminal webhook) and the server's CPU time per prediction (parent +
    worker, from ``/proc``), median of the rounds, and each as a ratio to
    ``plain``.  Goal (issue #13): signing and the outbox cost less than 10 %.

``failing``
    N sync null predictions whose terminal webhook keeps failing (the receiver's
    port refuses connections), on minicog (and coglet 0.23.1 when its venv
    exists).  Reported: the server's threads and RSS (parent process, and whole
    tree) when idle and while all N terminal webhooks wait for their next retry.
    Goal (issue #9): at most 64 threads, RSS within 20 MiB of idle.

Usage (from the repository root)::

    python benchmarks/bench_webhooks.py                 # both scenarios
    python benchmarks/bench_webhooks.py --only cost --rounds 5 --requests 2000
    python benchmarks/bench_webhooks.py --only failing --failing 2000

Results go to ``benchmarks/results/webhooks.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.server
import json
import os
import socket
import statistics
import sys
import threading
import time
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (benchmarks/ is not a package)
import loadgen  # noqa: E402

HOST = bench.HOST
SECRET = "whsec_" + base64.b64encode(b"benchmark-signing-key-32-bytes!!").decode()


class Receiver:
    """Counts terminal webhooks (a loopback HTTP/1.1 server answering 200)."""

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0
        self.cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver.cond:
                    receiver.count += 1
                    receiver.last_at = time.monotonic()
                    receiver.cond.notify_all()

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Server(bench.Server):
    """bench.Server with extra environment variables."""

    def __init__(self, kind: str, args: argparse.Namespace, extra_env: dict[str, str]):
        super().__init__(kind, "null", args)
        self.extra_env = extra_env

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command()
        env.update({k: v.replace("{workdir}", self.workdir) for k, v in self.extra_env.items()})
        return argv, env


CONFIGS = {
    "plain": {},
    "signed": {"MINICOG_WEBHOOK_SECRET": SECRET},
    "signed+outbox": {"MINICOG_WEBHOOK_SECRET": SECRET, "MINICOG_WEBHOOK_OUTBOX": "{workdir}/outbox"},
}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by *pid* and its descendants (server + worker)."""
    total = 0
    for p in loadgen.process_tree(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as fh:
                fields = fh.read().decode("ascii", "replace").rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def run_cost(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    servers = {name: Server("minicog", args, env).start() for name, env in CONFIGS.items()}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    try:
        for s in servers.values():
            s.wait_ready(args.ready_timeout)
        body = {"input": {}, "webhook": receiver.url, "webhook_events_filter": ["completed"]}
        for name, s in servers.items():  # warm-up
            loadgen.run_load(HOST, s.port, body=body, requests=50, duration=10)
        receiver.wait_count(50 * len(servers), 30)
        for _ in range(args.rounds):
            for name, s in servers.items():
                base = receiver.count
                cpu0 = tree_cpu_seconds(s.pid)
                t0 = time.monotonic()
                r = loadgen.run_load(HOST, s.port, body=body, concurrency=args.concurrency, requests=args.requests,
                                     duration=args.duration)
                complete = receiver.wait_count(base + r["succeeded"], 60)
                end_to_end = (time.monotonic() if not complete else receiver.last_at) - t0
                time.sleep(0.5)  # let the deliveries' last CPU (and the outbox's clean-up) be counted
                cpu_us = (tree_cpu_seconds(s.pid) - cpu0) / max(1, r["succeeded"]) * 1e6
                rounds[name].append({"rps": r["throughput_rps"], "e2e_rps": round(r["succeeded"] / end_to_end, 2),
                                     "cpu_us_per_prediction": round(cpu_us, 1),
                                     "succeeded": r["succeeded"], "all_webhooks": complete, "p50_ms": r.get("p50_ms"),
                                     "errors": r["errors"]})
    finally:
        for s in servers.values():
            s.stop()
        receiver.close()
    out: dict[str, Any] = {}
    for name, rs in rounds.items():
        out[name] = {"rps_median": statistics.median(r["rps"] for r in rs),
                     "e2e_rps_median": statistics.median(r["e2e_rps"] for r in rs),
                     "cpu_us_median": statistics.median(r["cpu_us_per_prediction"] for r in rs), "rounds": rs}
    for name in ("signed", "signed+outbox"):
        out[name]["ratio_to_plain"] = round(out[name]["rps_median"] / out["plain"]["rps_median"], 3)
        out[name]["e2e_ratio_to_plain"] = round(out[name]["e2e_rps_median"] / out["plain"]["e2e_rps_median"], 3)
        # CPU per prediction is what bounds throughput on a machine with nothing else to
        # do; it is also far less disturbed by other load than a req/s figure.
        out[name]["cpu_ratio_to_plain"] = round(out[name]["cpu_us_median"] / out["plain"]["cpu_us_median"], 3)
    return out


def _threads_and_rss(pid: int) -> dict[str, Any]:
    tree = loadgen.tree_memory(pid)
    return {"threads": loadgen.read_status_kb(pid, "Threads"), "rss_mb": bench._mb(loadgen.read_status_kb(pid, "VmRSS")),
            "tree_rss_mb": bench._mb(tree["rss_kb"])}


def run_failing(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    with socket.socket() as s:  # a port nobody listens on: every attempt is refused
        s.bind((HOST, 0))
        dead = f"http://{HOST}:{s.getsockname()[1]}/hook"
    server = Server(kind, args, {}).start()
    try:
        server.wait_ready(args.ready_timeout)
        time.sleep(1.0)  # let start-up garbage settle before reading idle figures
        idle = _threads_and_rss(server.pid)
        body = {"input": {}, "webhook": dead, "webhook_events_filter": ["completed"]}
        r = loadgen.run_load(HOST, server.port, body=body, requests=args.failing, duration=120)
        time.sleep(3.0)  # first attempts and early retries have run; the rest wait for their backoff
        samples = []
        for _ in range(5):
            samples.append(_threads_and_rss(server.pid))
            time.sleep(1.0)
        peak = {k: max(s[k] for s in samples) for k in samples[0]}
        return {"predictions": r["succeeded"], "idle": idle, "pending_peak": peak,
                "thread_growth": peak["threads"] - idle["threads"],
                "rss_growth_mb": round(peak["rss_mb"] - idle["rss_mb"], 1)}
    finally:
        server.stop(grace=5.0)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="cost,failing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1500, help="predictions per configuration and round")
    parser.add_argument("--concurrency", type=int, default=1, help="closed-loop clients (the null predictor has one slot)")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--failing", type=int, default=2000, help="predictions whose webhook keeps failing")
    parser.add_argument("--coglet-venv", default=os.environ.get("COGLET_VENV") or os.path.join(os.path.dirname(bench.REPO), ".venv-coglet"))
    parser.add_argument("--minicog-python", default=sys.executable)
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "webhooks.json"))
    args = parser.parse_args(argv)
    args.minicog_env = {}  # bench.Server reads it (extra environment for minicog); ours is per configuration
    only = {s.strip() for s in args.only.split(",")}
    results: dict[str, Any] = {}
    if "cost" in only:
        results["cost"] = run_cost(args)
        for name, r in results["cost"].items():
            print(f"cost {name:14s} {r['rps_median']:8.1f} req/s  end-to-end {r['e2e_rps_median']:8.1f}/s  "
                  f"server CPU {r['cpu_us_median']:7.1f} us/prediction"
                  + (f"  ratios to plain: req/s {r['ratio_to_plain']:.3f}, e2e {r['e2e_ratio_to_plain']:.3f}, "
                     f"CPU {r['cpu_ratio_to_plain']:.3f}" if "ratio_to_plain" in r else ""))
    if "failing" in only:
        kinds = ["minicog"] + (["coglet"] if os.path.exists(os.path.join(args.coglet_venv, "bin", "python")) else [])
        results["failing"] = {kind: run_failing(kind, args) for kind in kinds}
        for kind, r in results["failing"].items():
            print(f"failing {kind:8s} {r['predictions']} predictions: threads {r['idle']['threads']} -> "
                  f"{r['pending_peak']['threads']}, RSS {r['idle']['rss_mb']} -> {r['pending_peak']['rss_mb']} MiB "
                  f"(tree {r['idle']['tree_rss_mb']} -> {r['pending_peak']['tree_rss_mb']} MiB)")
    doc = {"meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "git": bench._git_sha(), "cpus": os.cpu_count(), "args": vars(args)}, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    print(f"results written to {os.path.relpath(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
