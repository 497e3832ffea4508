"""``minicog bundle``: minicog as one executable zip file (a ``.pyz``) for air-gapped images.

The archive holds the ``minicog`` package (sources, the default model's text
and any other data files under ``minicog/``) and a top-level ``__main__.py``
that runs the command line, so::

    python3 -I -S minicog.pyz serve --predictor predict.py

works where nothing is installed.  Python puts the archive itself on
``sys.path`` (even with ``-I``), so ``import minicog`` finds the package inside
it.  Workers find it too: the orchestrator spawns ``python -m minicog.worker``
with the folder that holds the ``minicog`` package - here the archive - first
on ``PYTHONPATH``.  The worker is not started with ``-I``/``-S``: the model it
imports needs the environment's site-packages (torch and the like).

Files are read with :mod:`zipimport`, which cannot write bytecode caches, so
each start would compile every module again.  The archive therefore carries
``.pyc`` files next to the sources, compiled by the Python that builds it as
unchecked-hash pycs (PEP 552: valid wherever the archive is copied, whatever
the files' times).  Another Python version ignores them (their magic number
differs) and compiles the sources; ``--no-compile`` leaves them out.

Entries are written in sorted order with a fixed timestamp, so the same
sources give the same archive byte for byte.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import stat
import tempfile
import zipfile
from typing import Iterator, Optional, Tuple

from .loader import zip_location

__all__ = ["build_bundle", "DEFAULT_INTERPRETER"]

#: The ``#!`` line's interpreter: the archive can then be run as ``./minicog.pyz``.
DEFAULT_INTERPRETER = "/usr/bin/env python3"

#: Zip entries need a date; a fixed one makes the archive reproducible (1980 is zip's epoch).
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)

_MAIN = '''\
"""minicog as one file: python3 minicog.pyz COMMAND ... (see 'python3 minicog.pyz --help')."""
import sys

from minicog.cli import main

sys.exit(main())
'''


def _package_files(package_dir: str) -> Iterator[Tuple[str, bytes]]:
    """(name inside the archive, data) for every file of the package, bytecode caches excluded."""
    root = os.path.dirname(package_dir)
    member = zip_location(package_dir)
    if member is not None:  # minicog itself runs from a .pyz: copy its entries
        archive, inner = member
        with zipfile.ZipFile(archive) as zf:
            for name in sorted(zf.namelist()):
                if name.startswith(inner + "/") and not name.endswith("/") and not name.endswith(".pyc"):
                    yield name, zf.read(name)
        return
    for folder, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                yield os.path.relpath(path, root).replace(os.sep, "/"), fh.read()


def _compiled(name: str, source: bytes, workdir: str) -> Optional[bytes]:
    """The unchecked-hash .pyc of *source* (None if it does not compile: the source still ships)."""
    src = os.path.join(workdir, "module.py")
    out = os.path.join(workdir, "module.pyc")
    with open(src, "wb") as fh:
        fh.write(source)
    try:
        py_compile.compile(src, cfile=out, dfile=name, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError:
        return None
    with open(out, "rb") as fh:
        return fh.read()


def _write(zf: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | mode) << 16
    zf.writestr(info, data)


def build_bundle(output: str, *, interpreter: Optional[str] = DEFAULT_INTERPRETER, compile: bool = True) -> int:
    """Write the archive to *output* (made executable); returns the number of files in it.

    *interpreter* is the ``#!`` line (None: no line).  The archive is written to a
    temporary file next to *output* and renamed, so a failed build leaves no half file.
    """
    spec = importlib.util.find_spec("minicog")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot locate the minicog package to bundle")
    package_dir = os.path.abspath(list(spec.submodule_search_locations)[0])
    target = os.path.abspath(output)
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".minicog-bundle-", suffix=".tmp", dir=folder)
    count = 0
    try:
        with os.fdopen(fd, "wb") as raw, tempfile.TemporaryDirectory(prefix="minicog-bundle-") as workdir:
            if interpreter:
                raw.write(b"#!" + interpreter.encode("utf-8") + b"\n")
            with zipfile.ZipFile(raw, "w") as zf:
                _write(zf, "__main__.py", _MAIN.encode("utf-8"))
                count += 1
                for name, data in _package_files(package_dir):
                    _write(zf, name, data)
                    count += 1
                    if compile and name.endswith(".py"):
                        code = _compiled(name, data, workdir)
                        if code is not None:
                            _write(zf, name + "c", code)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return count
