import os
import sys

# The tests import minicog from this checkout, installed or not.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest  # noqa: E402

from support import ServeProcess  # noqa: E402


@pytest.fixture
def serve_proc(tmp_path_factory):
    """Start ``python -m minicog serve`` subprocesses (listening when returned); killed at the end.

    Each gets a TMPDIR of its own under pytest's temporary folder: a killed server cannot
    remove its temporary folder (minicog-*), and that must not pile up in /tmp.
    """
    procs = []

    def start(*args, **kw) -> ServeProcess:
        kw.setdefault("tmp_dir", str(tmp_path_factory.mktemp("serve-tmp")))
        p = ServeProcess(*args, **kw)
        procs.append(p)
        p.wait_listening()
        return p

    yield start
    for p in procs:
        p.close()
