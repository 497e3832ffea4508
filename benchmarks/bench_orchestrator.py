"""Round trip of a null prediction and streamed-item rate through the orchestrator (no HTTP).

Usage: ``python benchmarks/bench_orchestrator.py [--runs N] [--items N]``

It starts a real worker subprocess on ``tests/predictors/null_or_items.py`` and
measures, from the caller's side:

* the median (and p90) time from ``submit(..., wait=True)`` to the end of
  ``Run.wait()`` for a prediction that returns ``None`` (the caller reads its
  answer itself, as the HTTP handler does), and the same through the listener's terminal call
  on the engine's I/O thread (one more thread hand-off);
* items per second for a generator yielding ``--items`` integers, each one a
  separate ``output`` message delivered to the listener.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from minicog.engine import Engine  # noqa: E402
from minicog.settings import Settings  # noqa: E402


class _Listener:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.items = 0
        self.result = None

    def started(self) -> None: pass
    def log(self, source, data) -> None: pass
    def output(self, index, value) -> None: self.items += 1
    def file_output(self, index, path, mime) -> None: self.items += 1
    def metric(self, name, value, mode) -> None: pass
    def succeeded(self, is_stream) -> None: self.result = "succeeded"; self.done.set()
    def failed(self, error) -> None: self.result = f"failed: {error}"; self.done.set()
    def canceled(self) -> None: self.result = "canceled"; self.done.set()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="null predictions to time")
    parser.add_argument("--items", type=int, default=100000, help="items for the streaming run")
    args = parser.parse_args(argv)

    orch = Engine(os.path.join(ROOT, "tests", "predictors", "null_or_items.py"), settings=Settings())
    t0 = time.perf_counter()
    orch.start()
    if not orch.wait_ready(60):
        print(f"worker not ready: {orch.state}\n{orch.setup.logs}", file=sys.stderr)
        return 1
    startup = time.perf_counter() - t0
    try:
        for i in range(20):  # warm-up
            l = _Listener()
            orch.submit(f"w{i}", {}, l)
            l.done.wait(10)
            orch.release(f"w{i}")
        times = []
        for i in range(args.runs):
            l = _Listener()
            start = time.perf_counter()
            # The caller waits on its run, as the HTTP handler does: it says so when it
            # submits (wait=True) and reads the answer itself (no hand-off from the
            # engine's I/O thread, whose poller never sees the slot).
            run = orch.submit(f"n{i}", {}, l, wait=True)
            if not run.wait(10) or l.result != "succeeded":
                print(f"prediction {i}: {l.result}", file=sys.stderr)
                return 1
            times.append(time.perf_counter() - start)
            run.release()
        handed = []
        for i in range(args.runs):
            l = _Listener()
            start = time.perf_counter()
            run = orch.submit(f"h{i}", {}, l)
            # The listener's event instead: the answer comes through the I/O thread.
            if not l.done.wait(10) or l.result != "succeeded":
                print(f"prediction {i}: {l.result}", file=sys.stderr)
                return 1
            handed.append(time.perf_counter() - start)
            run.release()
        handed.sort()
        times.sort()
        l = _Listener()
        start = time.perf_counter()
        orch.submit("stream", {"n": args.items}, l)
        if not l.done.wait(300) or l.result != "succeeded" or l.items != args.items:
            print(f"stream: {l.result}, {l.items} items", file=sys.stderr)
            return 1
        elapsed = time.perf_counter() - start
        orch.release("stream")
    finally:
        orch.stop()
    print(f"python {sys.version.split()[0]}, worker start-up to READY: {startup * 1000:.0f} ms")
    print(f"null prediction round trip (caller waits on its run): median {statistics.median(times) * 1e6:.0f} us, "
          f"p90 {times[int(len(times) * 0.9)] * 1e6:.0f} us over {args.runs} runs")
    print(f"null prediction round trip (listener event, via the I/O thread): median "
          f"{statistics.median(handed) * 1e6:.0f} us, p90 {handed[int(len(handed) * 0.9)] * 1e6:.0f} us")
    print(f"streamed items: {args.items / elapsed:,.0f} items/s ({args.items} items in {elapsed:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
