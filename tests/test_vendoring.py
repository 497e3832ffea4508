"""Vendoring minicog without pip: one ``minicog.pyz`` file, or a copy of the ``minicog/`` folder.

Each test works in an empty folder with no PYTHONPATH, so nothing but the
vendored copy can provide minicog; the fixture predictor reports which copy its
worker imported.  The .pyz runs under ``python -I -S`` (no site-packages, no
PYTHON* variables), as an air-gapped image would run it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import zipfile

import pytest

from support import ROOT, predictor, wait_until

TIMEOUT = 60


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PYTHON") and k not in ("PORT", "HOST", "COG_PREDICT_TYPE_STUB", "COG_TRAIN_TYPE_STUB")}


@pytest.fixture(scope="module")
def pyz(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("dist") / "minicog.pyz")
    proc = subprocess.run([sys.executable, "-m", "minicog", "bundle", "-o", out], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT, env={**_clean_env(), "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    assert f"Wrote {out} (" in proc.stderr
    return out


@pytest.fixture
def empty(tmp_path) -> str:
    folder = tmp_path / "empty"
    folder.mkdir()
    return str(folder)


def _inside(pyz: str) -> tuple:
    """Where minicog/__init__ comes from when imported from the archive (source or bytecode)."""
    return os.path.join(pyz, "minicog", "__init__.py"), os.path.join(pyz, "minicog", "__init__.pyc")


def _run(argv: list, cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, env=_clean_env())


def test_archive_holds_the_package_data_and_an_entry_point(pyz):
    with zipfile.ZipFile(pyz) as zf:
        names = set(zf.namelist())
    assert {"__main__.py", "minicog/__init__.py", "minicog/cli.py", "minicog/worker/__main__.py",
            "minicog/models/textgen.py", "minicog/models/corpus.txt"} <= names
    assert "minicog/cli.pyc" in names  # compiled once, so each start does not compile again
    assert not any("__pycache__" in n for n in names)
    with open(pyz, "rb") as fh:
        assert fh.readline() == b"#!/usr/bin/env python3\n"
    assert os.access(pyz, os.X_OK)


def test_predict_with_the_default_model_from_an_empty_folder(pyz, empty):
    proc = _run([sys.executable, "-I", "-S", pyz, "predict", "-i", "prompt=The", "-i", "max_tokens=5", "-i", "seed=4"],
                empty)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 5  # an iterator's output: the JSON list of its items, as Cog prints it
    assert "textgen: learned" in proc.stderr  # the corpus was read from inside the archive
    assert "built-in demo model" in proc.stderr
    assert os.listdir(empty) == []


def test_predict_with_a_model_file_uses_the_archive_in_the_worker(pyz, empty):
    shutil.copy(predictor("vendored_where.py"), os.path.join(empty, "predict.py"))
    proc = _run([sys.executable, "-I", "-S", pyz, "predict", "--predictor", "predict.py", "-i", "text=zip"], empty)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] == "zip"
    assert out["minicog"] in _inside(pyz)


def test_serve_from_the_archive_answers_predictions_and_stops_cleanly(pyz, empty):
    shutil.copy(predictor("vendored_where.py"), os.path.join(empty, "predict.py"))
    proc = subprocess.Popen([sys.executable, "-I", "-S", pyz, "serve", "--predictor", "predict.py", "--port", "0"],
                            cwd=empty, env=_clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stderr), daemon=True)
    reader.start()
    try:
        def port():
            assert proc.poll() is None, lines
            for line in list(lines):
                if m := re.search(r"on http://127\.0\.0\.1:(\d+)", line):
                    return int(m.group(1))
            return None

        def ask(method: str, path: str, body: dict | None = None):
            conn = http.client.HTTPConnection("127.0.0.1", p, timeout=TIMEOUT)
            try:
                conn.request(method, path, body=json.dumps(body) if body else None,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                return resp.status, json.loads(resp.read())
            finally:
                conn.close()

        p = wait_until(port, TIMEOUT, message="the listening line")
        wait_until(lambda: ask("GET", "/health-check")[1]["status"] == "READY", TIMEOUT, message="READY")
        status, body = ask("POST", "/predictions", {"input": {"text": "served"}})
        assert status == 200, body
        assert body["output"]["text"] == "served"
        assert body["output"]["minicog"] in _inside(pyz)
        # The browser page's static files are read from inside the archive too.
        conn = http.client.HTTPConnection("127.0.0.1", p, timeout=TIMEOUT)
        try:
            conn.request("GET", "/docs")
            resp = conn.getresponse()
            page = resp.read()
            assert resp.status == 200 and b"<html" in page.lower(), (resp.status, page[:200])
        finally:
            conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        reader.join(TIMEOUT)


def test_an_archive_can_bundle_itself(pyz, empty):
    again = os.path.join(empty, "again.pyz")
    proc = _run([sys.executable, "-I", "-S", pyz, "bundle", "-o", again, "--no-compile"], empty)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(pyz) as a, zipfile.ZipFile(again) as b:
        assert sorted(b.namelist()) == sorted(n for n in a.namelist() if not n.endswith(".pyc"))
    proc = _run([sys.executable, "-I", "-S", again, "--version"], empty)
    assert proc.returncode == 0 and proc.stdout.startswith("minicog ")


def test_a_copied_folder_works_with_python_m(empty):
    shutil.copytree(os.path.join(ROOT, "minicog"), os.path.join(empty, "minicog"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(predictor("vendored_where.py"), os.path.join(empty, "predict.py"))
    # -S: no site-packages, so only the copied folder (the current directory) provides minicog.
    proc = _run([sys.executable, "-S", "-m", "minicog", "predict", "--predictor", "predict.py", "-i", "text=dir"],
                empty)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"text": "dir", "minicog": os.path.join(empty, "minicog", "__init__.py")}


def test_every_module_imports_from_the_archive_with_the_standard_library_alone(pyz, empty):
    # A module that reads a data file at import time with open(__file__-relative path) would
    # fail here: inside the archive there is no such file (importlib.resources works).
    script = (
        "import importlib, pkgutil, sys\n"
        f"sys.path.insert(0, {pyz!r})\n"
        "import minicog\n"
        "for mod in pkgutil.walk_packages(minicog.__path__, 'minicog.'):\n"
        "    if mod.name.startswith('minicog.models.') and not mod.ispkg:\n"
        "        continue\n"
        "    importlib.import_module(mod.name)\n"
        "assert all(m.__file__.startswith(sys.path[0]) for n, m in sys.modules.items()\n"
        "           if n.split('.')[0] == 'minicog' and getattr(m, '__file__', None)), 'imported from outside'\n"
        "print('ok', len([n for n in sys.modules if n.startswith('minicog')]))\n"
    )
    proc = _run([sys.executable, "-I", "-S", "-c", script], empty)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")
