"""minicog.sdk.runtime: active() is False wherever the model is merely imported (True in a worker: test_engine_failures)."""

import os
import subprocess
import sys

import minicog
from minicog.sdk import runtime
from support import ROOT


def test_inactive_when_imported_outside_a_worker():
    code = "import minicog.compat; minicog.compat.install(); import cog, minicog; print(minicog.active(), cog.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": ROOT}).stdout.split()
    assert out[0] == "False"


def test_switch_is_process_wide_and_shared_by_the_public_name():
    assert minicog.active is runtime.active or minicog.active() == runtime.active()
    try:
        runtime._set_active()
        assert minicog.active() is True
    finally:
        runtime._set_active(False)
    assert minicog.active() is False
