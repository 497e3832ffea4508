"""Null throughput at one client under each placement of client, parent and worker on 2 CPUs.

Run from the repository root (Linux, at least 2 CPUs)::

    python benchmarks/bench_placement.py [--rounds 5] [--burst 1000]

One minicog ``null`` server is started and warmed; then, round after round,
every placement in :data:`PLACEMENTS` is applied with ``os.sched_setaffinity``
(to this process's load-generating threads, to every thread of the serving
process and to every thread of its worker) and measured with one burst.  It
shows how much of the null figure depends on where the kernel put the three
processes (benchmarks/README.rst, "Where the processes run").  Only this
benchmark's own processes are pinned, and only for its run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
import loadgen  # noqa: E402

#: name -> CPUs of (the client, the parent, the worker): "a" and "b" are the first two
#: CPUs this process may use, "ab" both.
PLACEMENTS: dict[str, tuple[str, str, str]] = {
    "not pinned": ("ab", "ab", "ab"),
    "parent alone, client with worker": ("a", "b", "a"),
    "parent with the client": ("a", "a", "b"),
    "parent with the worker": ("a", "b", "b"),
    "only the parent pinned": ("ab", "b", "ab"),
    "only the worker pinned": ("ab", "ab", "a"),
}


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of *pid* on *cpus* (threads that come later inherit their creator's)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # a thread that just ended
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=1000, help="requests per burst")
    opts = parser.parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2 or not os.path.isdir("/proc/self/task"):
        print("needs Linux and 2 usable CPUs", file=sys.stderr)
        return 2
    args = bench.parse_args([])
    before = os.sched_getaffinity(0)
    first, second = sorted(before)[:2]
    cpus = {"a": {first}, "b": {second}, "ab": {first, second}}
    server = bench.Server("minicog", "null", args).start()
    figures: dict[str, list[float]] = {name: [] for name in PLACEMENTS}
    try:
        server.wait_ready(args.ready_timeout)
        with open(f"/proc/{server.pid}/task/{server.pid}/children") as fh:
            worker = int(fh.read().split()[0])
        loadgen.run_load(bench.HOST, server.port, concurrency=1, requests=1000, duration=30)
        for round_no in range(opts.rounds):
            for name, (client, parent, child) in PLACEMENTS.items():
                os.sched_setaffinity(0, cpus[client])  # the load generator's threads are made after this
                pin_process(server.pid, cpus[parent])
                pin_process(worker, cpus[child])
                result = loadgen.run_load(bench.HOST, server.port, concurrency=1, requests=opts.burst, duration=30)
                figures[name].append(result["throughput_rps"])
            print(f"round {round_no + 1}: " + ", ".join(f"{v[-1]:.0f}" for v in figures.values()), flush=True)
    finally:
        os.sched_setaffinity(0, before)
        server.stop()
    width = max(map(len, figures))
    for name, values in figures.items():
        print(f"{name:{width}s}  median {statistics.median(values):6.0f} req/s  ({min(values):.0f}-{max(values):.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
