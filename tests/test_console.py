"""The console handler itself (minicog/console.py): reconfiguring it loses nothing, and a
deferred record reads like an ordinary one."""

from __future__ import annotations

import datetime
import io
import json
import logging
import threading
import time

import pytest

from minicog.console import configure_logging, log_deferred


def _console(log_format: str):
    """minicog's console on a StringIO, and a function that puts the old set-up back."""
    stream = io.StringIO()
    root = logging.getLogger("minicog")
    saved = (root.propagate, root.level, list(root.handlers))
    handler = configure_logging(log_format, "info", stream=stream)

    def restore() -> None:
        handler.flush()
        for h in list(root.handlers):
            if h not in saved[2]:
                root.removeHandler(h)
                h.close()
        root.propagate, root.level = saved[0], saved[1]

    return stream, handler, restore


def test_reconfiguring_on_the_same_stream_loses_no_record_logged_meanwhile():
    # serve configures the console twice on the way up while the worker already prints
    # its setup output from the engine's I/O thread; a record logged between the two
    # calls used to find no handler and vanish (a model's first setup lines).
    stream, handler, restore = _console("text")
    sent = 5000  # below the handler's capacity, so nothing may be dropped for lag
    started = threading.Event()

    def chatter() -> None:
        log = logging.getLogger("minicog.setup")
        for i in range(sent):
            log.info("setup line %d", i)
            if i == 0:
                started.set()

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        assert started.wait(10)
        while thread.is_alive():
            handler = configure_logging("json", "info", stream=stream)
            handler = configure_logging("text", "info", stream=stream)
        thread.join(10)
    finally:
        restore()  # the same handler throughout: it is kept when the stream is the same
    lines = [line for line in stream.getvalue().splitlines() if "setup line" in line]
    assert len(lines) == sent


def test_a_deferred_record_reads_as_an_ordinary_one_in_both_formats():
    # log_deferred hands the console the pieces (its writer builds the record); what an
    # operator reads must not differ from logger.info's line, fields and time included.
    log = logging.getLogger("minicog.prediction")
    fields = {"prediction_id": "p-1", "kind": "prediction", "status": "succeeded", "predict_time": 0.25,
              "error": None}
    for fmt in ("text", "json"):
        stream, handler, restore = _console(fmt)
        try:
            before = time.time()
            log_deferred(log, logging.INFO, "%s %s %s in %.3fs%s", "prediction", "p-1", "succeeded", 0.25, "",
                         extra=fields)
            log.info("%s %s %s in %.3fs%s", "prediction", "p-2", "succeeded", 0.25, "", extra=dict(fields, prediction_id="p-2"))
            log_deferred(log, logging.DEBUG, "hidden %s", "debug", extra=fields)  # below the level: dropped
            handler.flush()
        finally:
            restore()
        deferred, ordinary = stream.getvalue().splitlines()
        if fmt == "text":
            assert deferred.endswith("INFO minicog.prediction: prediction p-1 succeeded in 0.250s")
            assert ordinary.endswith("INFO minicog.prediction: prediction p-2 succeeded in 0.250s")
            assert len(deferred) == len(ordinary)  # same time format
        else:
            doc = json.loads(deferred)
            assert doc["message"] == "prediction p-1 succeeded in 0.250s"
            assert doc["prediction_id"] == "p-1" and doc["status"] == "succeeded" and doc["predict_time"] == 0.25
            assert set(doc) == set(json.loads(ordinary))
            stamp = datetime.datetime.fromisoformat(doc["time"]).timestamp()
            assert before - 1 <= stamp <= time.time() + 1


@pytest.mark.parametrize("created", [1764748800.0, 1764748800.9996, 1764748801.0004, 1764752399.5])
@pytest.mark.parametrize("level, msg, args, extra", [
    (logging.INFO, "%s %s %s in %.3fs%s", ("prediction", "p-1", "failed", 0.0125, ": boom"),
     {"prediction_id": "p-1", "status": "failed"}),
    (logging.INFO, "%s", ("a line the model printed \u00e9",), {"prediction_id": "p-1", "source": "stdout"}),
    (logging.WARNING, "no arguments, 100%", (), None),
    (logging.INFO, "%(who)s mapped", ({"who": "a single mapping is"},), {"source": "stderr"}),
])
def test_text_lines_of_deferred_pieces_are_the_lines_of_their_records(created, level, msg, args, extra):
    """The writer formats deferred pieces without a LogRecord (TextFormatter.format_pieces):
    the line is the one logging would format, milliseconds and [id] prefix included."""
    from minicog.console import BackgroundStreamHandler, TextFormatter

    formatter = TextFormatter()
    item = (created, "minicog.prediction", level, msg, args, extra)
    expected = formatter.format(BackgroundStreamHandler._record(item))
    assert formatter.format_pieces(*item) == expected
    assert formatter.format_pieces(*item) == expected  # the cached second gives the same text


def test_with_another_handler_or_a_filter_a_deferred_record_is_an_ordinary_one():
    # An embedding program's handler (or pytest's capture) must get a real LogRecord, with
    # the extra fields set, and filters must run: the shortcut is only for the console alone.
    stream, handler, restore = _console("text")
    log = logging.getLogger("minicog.prediction")
    got: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    collector = Collect()
    log.addHandler(collector)
    try:
        log_deferred(log, logging.INFO, "line %s", "one", extra={"prediction_id": "p-9", "source": "stdout"})
        log.removeHandler(collector)
        log.addFilter(lambda record: "secret" not in record.getMessage())
        log_deferred(log, logging.INFO, "line %s", "secret", extra={"prediction_id": "p-9", "source": "stdout"})
        log_deferred(log, logging.INFO, "line %s", "two", extra={"prediction_id": "p-9", "source": "stdout"})
        handler.flush()
    finally:
        log.removeHandler(collector)
        log.filters.clear()
        restore()
    assert [r.getMessage() for r in got] == ["line one"] and got[0].prediction_id == "p-9"
    text = stream.getvalue()
    assert "[p-9] line one" in text and "[p-9] line two" in text and "secret" not in text
