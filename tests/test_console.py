"""The console handler itself (minicog/console.py): reconfiguring it loses nothing."""

from __future__ import annotations

import io
import logging
import threading

from minicog.console import configure_logging


def test_reconfiguring_on_the_same_stream_loses_no_record_logged_meanwhile():
    # serve configures the console twice on the way up while the worker already prints
    # its setup output from the engine's I/O thread; a record logged between the two
    # calls used to find no handler and vanish (a model's first setup lines).
    stream = io.StringIO()
    root = logging.getLogger("minicog")
    saved = (root.propagate, root.level, list(root.handlers))
    handler = configure_logging("text", "info", stream=stream)
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
        handler.flush()
        for h in list(root.handlers):
            if h not in saved[2]:
                root.removeHandler(h)
                h.close()
        root.propagate, root.level = saved[0], saved[1]
    lines = [line for line in stream.getvalue().splitlines() if "setup line" in line]
    assert len(lines) == sent
