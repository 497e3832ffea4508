import os
import sys

# The tests import minicog from this checkout, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

from support import ServeProcess  # noqa: E402


@pytest.fixture
def serve_proc():
    """Start ``python -m minicog serve`` subprocesses (listening when returned); killed at the end."""
    procs = []

    def start(*args, **kw) -> ServeProcess:
        p = ServeProcess(*args, **kw)
        procs.append(p)
        p.wait_listening()
        return p

    yield start
    for p in procs:
        p.close()
