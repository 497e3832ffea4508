"""GET /metrics: Prometheus' text exposition format, parsed here by its rules, and the counts
after a known sequence of predictions on a real service."""

import math
import re

import pytest

from http_helpers import call, running
from minicog.server.metrics import Histogram, Metrics
from support import Receiver, wait_until

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class FormatError(AssertionError):
    pass


def _value(text: str) -> float:
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise FormatError(f"bad sample value {text!r}")
    return float(text)


def _labels(text: str, line: str) -> tuple:
    """Parse ``name="value",...`` (escapes \\\\, \\", \\n) into a sorted tuple of pairs."""
    pairs, i = [], 0
    while i < len(text):
        m = re.compile(r"\s*([^=\s]+)\s*=\s*\"").match(text, i)
        if not m or not LABEL_NAME.match(m.group(1)) or m.group(1).startswith("__"):
            raise FormatError(f"bad label in {line!r}")
        i, value = m.end(), []
        while True:
            if i >= len(text):
                raise FormatError(f"unterminated label value in {line!r}")
            c = text[i]
            if c == "\\":
                esc = text[i + 1:i + 2]
                if esc not in ("\\", '"', "n"):
                    raise FormatError(f"bad escape in {line!r}")
                value.append("\n" if esc == "n" else esc)
                i += 2
            elif c == '"':
                i += 1
                break
            else:
                value.append(c)
                i += 1
        pairs.append((m.group(1), "".join(value)))
        rest = text[i:].lstrip()
        if rest.startswith(","):
            i = len(text) - len(rest) + 1
        elif rest:
            raise FormatError(f"junk after a label in {line!r}")
        else:
            break
    if len({k for k, _ in pairs}) != len(pairs):
        raise FormatError(f"repeated label in {line!r}")
    return tuple(sorted(pairs))


def parse(text: str) -> dict:
    """Families by name: {"type", "help", "samples": {(sample name, labels): value}}."""
    if not text.endswith("\n"):
        raise FormatError("the exposition must end with a newline")
    families: dict = {}
    current = None
    for line in text.split("\n")[:-1]:
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not METRIC_NAME.match(name):
                    raise FormatError(f"bad metric name {name!r}")
                fam = families.setdefault(name, {"type": None, "help": None, "samples": {}})
                if parts[1] == "TYPE":
                    if fam["type"] is not None or fam["samples"]:
                        raise FormatError(f"TYPE of {name} repeated or after its samples")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise FormatError(f"bad TYPE line {line!r}")
                    fam["type"] = parts[3]
                else:
                    if fam["help"] is not None:
                        raise FormatError(f"HELP of {name} repeated")
                    fam["help"] = parts[3] if len(parts) == 4 else ""
                current = name
            continue
        m = re.fullmatch(r"([^\s{]+)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?", line)
        if not m or not METRIC_NAME.match(m.group(1)):
            raise FormatError(f"bad sample line {line!r}")
        name, labels, value = m.group(1), _labels(m.group(2) or "", line), _value(m.group(3))
        family = current if current is not None and (name == current or (
            families[current]["type"] == "histogram" and name in (current + "_bucket", current + "_sum", current + "_count"))) else name
        fam = families.setdefault(family, {"type": None, "help": None, "samples": {}})
        if family != current and fam["samples"]:
            raise FormatError(f"samples of {family} are not grouped together")
        current = family
        if (name, labels) in fam["samples"]:
            raise FormatError(f"duplicate series {line!r}")
        fam["samples"][(name, labels)] = value
    for name, fam in families.items():
        if fam["type"] == "counter":
            if not name.endswith("_total"):
                raise FormatError(f"counter {name} must end in _total")
            if any(v < 0 for v in fam["samples"].values()):
                raise FormatError(f"negative counter {name}")
        if fam["type"] == "histogram":
            _check_histogram(name, fam["samples"])
    return families


def _check_histogram(name: str, samples: dict) -> None:
    buckets = sorted(((_value(dict(lb)["le"]), v) for (n, lb), v in samples.items() if n == name + "_bucket"))
    if not buckets or not math.isinf(buckets[-1][0]):
        raise FormatError(f"histogram {name} lacks the +Inf bucket")
    counts = [v for _, v in buckets]
    if counts != sorted(counts):
        raise FormatError(f"histogram {name} buckets are not cumulative")
    count = samples.get((name + "_count", ()))
    if count != counts[-1] or (name + "_sum", ()) not in samples:
        raise FormatError(f"histogram {name}: _count differs from the +Inf bucket or _sum is missing")


def value(families: dict, name: str, **labels) -> float:
    for fam in families.values():
        key = (name, tuple(sorted(labels.items())))
        if key in fam["samples"]:
            return fam["samples"][key]
    raise KeyError(f"{name}{labels} not exposed")


def scrape(svc) -> dict:
    r = call(svc, "GET", "/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(r.body.decode("utf-8"))


def test_the_parser_rejects_what_the_format_forbids():
    good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"q\"} 3\n"
    assert value(parse(good), "a_total", k='v"q') == 3
    for bad in ["a_total 1", "# TYPE a counter\na 1\n", "# TYPE a_total counter\na_total{k=\"v} 1\n",
                "1bad 2\n", "a{0k=\"v\"} 1\n", "a one\n", "# TYPE h histogram\nh_bucket{le=\"1.0\"} 2\nh_count 2\nh_sum 1\n",
                "# TYPE h histogram\nh_bucket{le=\"1.0\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 1\n",
                "a 1\na 2\n"]:
        with pytest.raises(FormatError):
            parse(bad)


def test_counts_after_a_known_sequence_of_predictions():
    with Receiver() as rx, Receiver(lambda rec: (500, {}, b"")) as broken:
        with running("http_echo.py", settings=dict(webhook_max_retries=1)) as svc:
            before = scrape(svc)
            assert value(before, "minicog_predictions_total", status="succeeded") == 0
            assert value(before, "minicog_setup_duration_seconds") > 0
            assert value(before, "minicog_slots_free") == value(before, "minicog_slots") == 1
            for i in range(3):
                assert call(svc, "POST", "/predictions", {"input": {"text": f"t{i}"}}).json()["status"] == "succeeded"
            for _ in range(2):
                assert call(svc, "POST", "/predictions", {"input": {"fail": True}}).json()["status"] == "failed"
            r = call(svc, "POST", "/predictions", {"input": {"sleep": 30}}, headers={"Prefer": "respond-async"})
            pid = r.json()["id"]
            wait_until(lambda: value(scrape(svc), "minicog_predictions_in_flight") == 1, message="one in flight")
            during = scrape(svc)
            assert value(during, "minicog_slots_free") == 0
            assert call(svc, "POST", f"/predictions/{pid}/cancel").status == 200
            wait_until(lambda: value(scrape(svc), "minicog_predictions_total", status="canceled") == 1, message="cancel")
            for target in (rx, broken):
                r = call(svc, "POST", "/predictions", {"input": {}, "webhook": target.url,
                                                       "webhook_events_filter": ["completed"]})
                assert r.json()["status"] == "succeeded"
            wait_until(lambda: value(scrape(svc), "minicog_webhooks_pending") == 0, message="webhooks done")
            after = scrape(svc)

    assert value(after, "minicog_predictions_total", status="succeeded") == 5
    assert value(after, "minicog_predictions_total", status="failed") == 2
    assert value(after, "minicog_predictions_total", status="canceled") == 1
    assert value(after, "minicog_prediction_duration_seconds_count") == 8
    assert value(after, "minicog_prediction_queue_seconds_count") == 8
    # The canceled one ran at least until it was seen in flight, the others far less than 30 s.
    assert value(after, "minicog_prediction_duration_seconds_bucket", le="+Inf") == 8
    assert value(after, "minicog_prediction_duration_seconds_bucket", le="30.0") == 8
    assert value(after, "minicog_predictions_in_flight") == 0
    assert value(after, "minicog_slots_free") == 1
    assert value(after, "minicog_webhook_deliveries_total", event="completed") == 1
    assert value(after, "minicog_webhook_failures_total", event="completed") == 2  # first attempt + 1 retry
    assert value(after, "minicog_worker_restarts_total", cause="crash") == 0
    assert after["minicog_prediction_duration_seconds"]["type"] == "histogram"
    assert after["minicog_predictions_total"]["type"] == "counter"


def test_metrics_can_be_turned_off():
    with running("http_echo.py", settings=dict(metrics_enabled=False)) as svc:
        r = call(svc, "GET", "/metrics")
        assert r.status == 404 and "metrics" in r.json()["error"]


def test_histogram_bounds_are_inclusive_and_label_values_are_escaped():
    h = Histogram((0.1, 1.0))
    for v in (0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    fam = parse("# TYPE h histogram\n" + "\n".join(h.lines("h")) + "\n")["h"]["samples"]
    assert fam[("h_bucket", (("le", "0.1"),))] == 1 and fam[("h_bucket", (("le", "1.0"),))] == 3
    assert fam[("h_bucket", (("le", "+Inf"),))] == 4 and fam[("h_sum", ())] == pytest.approx(8.6)
    m = Metrics()
    m.webhook_attempt('odd"event\\\n', True)
    fams = parse(m.render(in_flight=0, slots=1, free_slots=1, webhooks_pending=0, setup_seconds=None))
    assert value(fams, "minicog_webhook_deliveries_total", event='odd"event\\\n') == 1


def test_a_worker_crash_is_counted_by_cause():
    with running("dies_mid_prediction.py") as svc:
        r = call(svc, "POST", "/predictions", {"input": {"how": "exit"}})
        assert r.json()["status"] == "failed"
        wait_until(lambda: svc.orchestrator.state == "READY", timeout=30, message="the respawned worker")
        fams = scrape(svc)
        assert value(fams, "minicog_worker_restarts_total", cause="crash") == 1
        assert value(fams, "minicog_worker_restarts_total", cause="recycle") == 0
        assert value(fams, "minicog_predictions_total", status="failed") == 1
