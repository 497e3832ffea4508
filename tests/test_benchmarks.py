"""The benchmark's pure helpers: statistics, /proc tree memory readers, the ratio table.

The benchmark itself (benchmarks/bench.py) starts servers and takes minutes, so it
is never part of the test run; these tests keep the arithmetic it reports honest.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys

import pytest

from support import ROOT, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _load(name: str):
    path = os.path.join(ROOT, "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loadgen = _load("loadgen")


def test_percentile_matches_statistics_inclusive_quantiles():
    data = [((i * 7919) % 101) / 3.0 for i in range(257)]
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    for p in range(1, 100):
        assert loadgen.percentile(data, p) == pytest.approx(cuts[p - 1])
    assert loadgen.percentile(data, 0) == min(data)
    assert loadgen.percentile(data, 100) == max(data)


def test_percentile_edges():
    assert loadgen.percentile([], 50) is None
    assert loadgen.percentile([4.0], 99) == 4.0
    assert loadgen.percentile([1, 2], 50) == 1.5
    with pytest.raises(ValueError):
        loadgen.percentile([1, 2], 101)


def test_summarize_latencies_reports_milliseconds():
    summary = loadgen.summarize_latencies([0.001, 0.002, 0.003, 0.004])
    assert summary["count"] == 4
    assert summary["p50_ms"] == pytest.approx(2.5)
    assert summary["max_ms"] == pytest.approx(4.0)
    assert summary["mean_ms"] == pytest.approx(2.5)
    assert loadgen.summarize_latencies([])["p99_ms"] is None


def test_tree_memory_sums_parent_and_child():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        tree = wait_until(lambda: child.pid in loadgen.process_tree(os.getpid()) and loadgen.process_tree(os.getpid()),
                          timeout=10, message="child in the process tree")
        assert tree[0] == os.getpid()
        mine = loadgen.tree_memory(os.getpid())
        own_rss = loadgen.read_status_kb(os.getpid(), "VmRSS")
        child_rss = wait_until(lambda: loadgen.read_status_kb(child.pid, "VmRSS"), timeout=10, message="child RSS")
        assert child.pid in mine["pids"]
        # The sum covers both processes (allowing for drift between the separate reads).
        assert mine["rss_kb"] >= 0.8 * (own_rss + child_rss)
        assert mine["hwm_kb"] >= mine["rss_kb"] * 0.9
        assert loadgen.tree_memory(child.pid)["pids"] == [child.pid]
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert loadgen.process_tree(child.pid) == []
    assert loadgen.read_status_kb(child.pid, "VmRSS") is None


def test_sampler_sees_an_allocation():
    baseline = loadgen.read_status_kb(os.getpid(), "VmRSS")
    with loadgen.TreeMemorySampler(os.getpid(), interval=0.005, max_seconds=30) as sampler:
        block = b"x" * (64 * 1024 * 1024)  # written, so the pages are resident
        wait_until(lambda: sampler.peak_rss_kb >= baseline + 48 * 1024, timeout=10, message="sampled peak")
        del block
    assert sampler.samples >= 1


def test_compare_computes_ratios_and_goals():
    bench = _load("bench")
    results = {
        "minicog": {"null": {"throughput_rps": 300.0, "p50_ms": 2.0, "count_409": 0},
                    "async": {"count_409": 0}, "file": {"peak_mb": 100.0}, "cold": {"median_s": 0.5}},
        "coglet": {"null": {"throughput_rps": 200.0, "p50_ms": 4.0, "count_409": 9},
                   "async": {"count_409": 50}, "file": {"peak_mb": 150.0}, "cold": {"median_s": 0.5}},
    }
    rows = {row["metric"]: row for row in bench.compare(results)}
    assert rows["null.throughput_rps"]["ratio"] == 1.5 and rows["null.throughput_rps"]["met"] is True
    assert rows["null.p50_ms"]["ratio"] == 0.5 and rows["null.p50_ms"]["met"] is True
    assert rows["async.count_409"]["met"] is True
    assert rows["file.peak_mb"]["met"] is False  # 0.667 > 0.5
    assert rows["cold.median_s"]["met"] is False  # equal is not faster
    assert rows["sse.tokens_per_s"]["ratio"] is None and rows["sse.tokens_per_s"]["met"] is None
    table = bench.format_table(list(rows.values()))
    assert "null c=1 throughput" in table and "1.500" in table


def test_problems_explains_every_missing_figure():
    bench = _load("bench")
    results = {
        "minicog": {"sse": {"runs": [{"ok": False, "error_event": '{"error":"SSE stream lagged"}'}, {"ok": True}]},
                    "failures": {"file": "ServerNotReady: no READY within 60s\nlog tail"}},
        "coglet": {"null": {"statuses": {"200": 5, "409": 2, "500": 1}, "errors": ["HTTP 500: b'boom'"]}},
    }
    lines = bench.problems(results)
    assert any("minicog sse run 1" in line and "lagged" in line for line in lines)
    assert not any("sse run 2" in line for line in lines)
    assert "minicog file: ServerNotReady: no READY within 60s" in lines
    assert any(line.startswith("coglet null: unexpected answers {'500': 1}") for line in lines)


def test_steady_bursts_summarize_as_medians_and_paired_ratios():
    bench = _load("bench")
    mine = [{"throughput_rps": r, "p50_ms": 0.3, "p99_ms": 0.5 + i / 10, "count_409": 0, "statuses": {"200": 1000}}
            for i, r in enumerate([2000.0, 3000.0, 2600.0])]
    mine[1]["statuses"] = {"200": 999, "500": 1}
    mine[1]["errors"] = ["HTTP 500: b'boom'"]
    theirs = [{"throughput_rps": r, "p50_ms": 0.7, "p99_ms": 1.0, "count_409": 2, "statuses": {"200": 998, "409": 2}}
              for r in (1100.0, 1400.0, 1200.0)]
    summary = bench.summarize_bursts(mine)
    assert summary["throughput_rps"] == 2600.0 and summary["p99_ms"] == 0.6  # medians, not means
    assert summary["burst_throughput_rps"] == [2000.0, 3000.0, 2600.0]
    assert summary["statuses"] == {"200": 2999, "500": 1}
    assert bench.summarize_bursts(theirs)["count_409"] == 6
    # Each round's ratio pairs the two bursts taken next to each other: 1.818, 2.143, 2.167.
    paired = bench.paired_ratios(summary["burst_throughput_rps"], [b["throughput_rps"] for b in theirs])
    assert paired == {"median": 2.143, "min": 1.818, "max": 2.167, "rounds": 3, "goal": 2.0, "rounds_met": 2}
    assert bench.paired_ratios([180.0, 150.0], [100.0, 100.0], goal=1.7)["rounds_met"] == 1
    assert bench.paired_ratios([None, 100.0], [50.0, 0.0]) is None  # no round has both figures
    # A failed burst is reported like a failed null run.
    lines = bench.problems({"minicog": {"steady": summary}})
    assert any(line.startswith("minicog steady: unexpected answers {'500': 1}") for line in lines)
    rows = {row["metric"]: row for row in bench.compare(
        {"minicog": {"steady": summary}, "coglet": {"steady": bench.summarize_bursts(theirs)}})}
    assert rows["steady.throughput_rps"]["ratio"] == 2.167 and rows["steady.throughput_rps"]["met"] is True
    assert rows["steady.p50_ms"]["ratio"] == 0.429 and rows["steady.p50_ms"]["met"] is True


class _Answers:
    """A loopback server that reads one request per answer and writes the canned bytes
    given for it: the raw client must frame real responses, split however TCP splits them."""

    def __init__(self, answers: list[bytes]):
        import socket
        import threading

        self.answers = answers
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        with conn:
            buf = b""
            for answer in self.answers:
                while b"\r\n\r\n" not in buf:
                    buf += conn.recv(65536)
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                for i in range(0, len(answer), 7):  # in small pieces
                    conn.sendall(answer[i:i + 7])

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def test_raw_connection_reads_answers_by_content_length():
    body = b'{"status":"succeeded","output":"ok"}'
    answers = [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nServer: x\r\n\r\n%s" % (len(body), body),
               b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}",
               b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]
    server = _Answers(answers)
    conn = loadgen.RawConnection("127.0.0.1", server.port, timeout=10)
    try:
        request = loadgen.build_request("127.0.0.1", server.port, "POST", "/predictions", b'{"input":{}}',
                                        {"Content-Type": "application/json"})
        assert conn.exchange(request) == (200, False, body)
        assert conn.exchange(request) == (409, False, b"{}")
        assert conn.exchange(request) == (200, True, b"")
    finally:
        conn.close()
        server.close()
    assert server.requests[0] == (b"POST /predictions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                  b"Content-Type: application/json\r\nContent-Length: 12\r\n\r\n"
                                  b'{"input":{}}' % server.port)


def test_raw_connection_refuses_answers_it_cannot_frame():
    server = _Answers([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"])
    conn = loadgen.RawConnection("127.0.0.1", server.port, timeout=10)
    try:
        with pytest.raises(loadgen.ResponseError):
            conn.exchange(loadgen.build_request("127.0.0.1", server.port, "POST", "/", b""))
    finally:
        conn.close()
        server.close()
    with pytest.raises(ValueError):
        loadgen.RawConnection("192.0.2.1", 80, timeout=1)  # loopback only


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_sse_reader_parses_chunked_events_split_anywhere():
    # Events cross HTTP chunk boundaries (and the server writes 7 bytes at a time).
    stream = (b'id: 1\nevent: start\ndata: {"status":"processing"}\n\n: keep-alive\n\n'
              b'id: 2\nevent: output\ndata: {"chunk":"a","index":0}\n\n'
              b'id: 3\nevent: output\ndata: {"chunk":"b","index":1}\n\n'
              b'id: 4\nevent: completed\ndata: {"status":"succeeded"}\n\n')
    cut1, cut2 = stream.index(b"event: output") + 3, stream.index(b'"b"')
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
              + _chunked(stream[:cut1], stream[cut1:cut2], stream[cut2:]))
    server = _Answers([answer])
    try:
        result = loadgen.stream_sse("127.0.0.1", server.port, body={"input": {}}, timeout=10, expect=["a", "b"])
    finally:
        server.close()
    assert result["ok"] and result["tokens"] == 2
    assert result["events"] == {"start": 1, "output": 2, "completed": 1}
    assert b"Accept: text/event-stream" in server.requests[0]


def test_sse_reader_reports_an_error_answer_and_a_lagged_stream():
    body = b'{"detail":"bad"}'
    lagged = (b'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n'
              b'event: output\ndata: {"chunk":"a","index":0}\n\n'
              b'event: error\ndata: {"error":"SSE stream lagged; events were dropped","skipped":3}\n\n')
    for answer, check in [
        (b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
         lambda r: r["http_status"] == 422 and r["error"] == body.decode()),
        (lagged, lambda r: "lagged" in r["error_event"] and r["tokens"] == 1),  # read up to the close
    ]:
        server = _Answers([answer])
        try:
            result = loadgen.stream_sse("127.0.0.1", server.port, body={"input": {}}, timeout=10)
        finally:
            server.close()
        assert not result["ok"] and check(result), result
