"""The README's examples, run as written in a fresh copy of the clone.

The command lines are taken from README.rst's literal blocks, not copied into
this file, so an example that stops working (a missing input file, an output
written into the clone, a recipe that does not do what the text says) fails
here.  The copy holds the files git tracks, as a fresh clone does.  Two
substitutions keep parallel runs apart and stay on loopback: ``/tmp/`` becomes
this test's scratch folder, and the curl examples' ``localhost:5000`` /
``localhost:8000`` become a server on a free port and a webhook receiver of the
test.  ``serve`` lines are not run here (they block); the curl section runs
against a ``python -m minicog serve`` started in the copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading

import pytest

from support import ROOT, Receiver, wait_until

TIMEOUT = 60

pytestmark = pytest.mark.slow


def _literal_blocks(text: str) -> list[list[str]]:
    """The indented literal blocks of an reST text (after a line ending in '::'), as lines."""
    lines = text.splitlines()
    blocks: list[list[str]] = []
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            base = len(lines[i]) - len(lines[i].lstrip())
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            if block:
                indent = min(len(l) - len(l.lstrip()) for l in block if l.strip())
                blocks.append([l[indent:] for l in block])
            continue
        i += 1
    return blocks


def _commands(block: list[str]) -> list[str]:
    """Shell commands of a block: continuations (backslash, open quote) joined, comments dropped."""
    out: list[str] = []
    current = ""
    for line in block:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current.count("'") % 2:  # inside a quoted string that spans lines: keep the newline
            current += "\n" + line.strip()
        else:
            current = (current + " " + line.strip()) if current else line.rstrip()
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        if current.count("'") % 2:
            continue
        out.append(current.strip())
        current = ""
    if current:
        out.append(current.strip())
    return out


def _readme_commands() -> list[str]:
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as fh:
        text = fh.read()
    return [c for block in _literal_blocks(text) for c in _commands(block)]


@pytest.fixture
def clone(tmp_path) -> str:
    """A copy of the files git tracks (a fresh clone's content), with python on PATH."""
    try:
        tracked = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, timeout=TIMEOUT,
                                 check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to know which files a clone has")
    dest = tmp_path / "clone"
    for rel in filter(None, tracked):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(dest / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(src, dest / rel)
    # The README says "python"; make it this interpreter whatever the machine calls it.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("python", "python3"):
        os.symlink(sys.executable, bindir / name)
    (tmp_path / "scratch").mkdir()
    (tmp_path / "tmp").mkdir()
    return str(dest)


def _env(clone: str) -> dict:
    """The examples' environment; TMPDIR is this test's own folder (beside the clone).

    The README's file examples run fixture models (tests/predictors/cli_files.py,
    cli_outputs.py:Weights) that write their outputs with tempfile and never remove them,
    as a real model may: run here, those files must not pile up in /tmp.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTHON") and k not in ("PORT", "HOST", "COG_PREDICT_TYPE_STUB", "COG_TRAIN_TYPE_STUB")}
    env["PATH"] = os.path.join(os.path.dirname(clone), "bin") + os.pathsep + env.get("PATH", "")
    env["TMPDIR"] = os.path.join(os.path.dirname(clone), "tmp")
    return env


def _files(folder: str) -> set[str]:
    found = set()
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found.update(os.path.relpath(os.path.join(root, f), folder) for f in files)
    return found


def _run(command: str, clone: str) -> subprocess.CompletedProcess:
    scratch = os.path.join(os.path.dirname(clone), "scratch")
    command = command.replace("/tmp/", scratch + "/")
    return subprocess.run(["bash", "-c", command], cwd=clone, capture_output=True, text=True, timeout=TIMEOUT,
                          env=_env(clone))


def test_readme_command_lines_run_as_written_and_leave_the_clone_clean(clone):
    runnable = [c for c in _readme_commands()
                if re.match(r"(cd \S+ && )?(\S+=\S+ )*python3? (-I -S )?(-m minicog|\S+\.pyz) ", c)
                or re.match(r"echo .* \| python -m minicog ", c)]
    runnable = [c for c in runnable if " serve" not in c and "[" not in c.split("#")[0]]
    assert len(runnable) >= 10, runnable  # the README's predict/train/bundle examples were found
    before = _files(clone)
    for command in runnable:
        proc = _run(command, clone)
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        assert "error" not in proc.stderr.lower(), f"{command}\n{proc.stderr}"
    assert _files(clone) == before, "README examples left files in the clone"


def test_readme_python_examples_run(clone):
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as fh:
        blocks = _literal_blocks(fh.read())
    scripts = ["\n".join(b) for b in blocks if b[0].startswith(("import minicog", "with minicog."))]
    assert len(scripts) >= 2
    before = _files(clone)
    for script in scripts:
        if not script.startswith("import minicog"):
            script = "import minicog\n" + script
        proc = subprocess.run([sys.executable, "-c", script], cwd=clone, capture_output=True, text=True,
                              timeout=TIMEOUT, env=_env(clone))
        assert proc.returncode == 0, f"{script}\n{proc.stderr}"
    assert _files(clone) == before


def test_readme_curl_examples_against_a_served_clone(clone):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    curls = [c for c in _readme_commands() if c.startswith("curl ")]
    assert len(curls) >= 8, curls
    # Stable sort: the shutdown example runs last wherever the README shows it (later
    # sections show curl examples of their own features).
    curls.sort(key=lambda c: "/shutdown" in c)
    with Receiver() as hook:
        server = subprocess.Popen([sys.executable, "-m", "minicog", "serve", "--port", "0"], cwd=clone,
                                  env={**_env(clone), "MINICOG_SHUTDOWN_GRACE_PERIOD": "5"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(server.stderr), daemon=True)
        reader.start()
        try:
            def port():
                assert server.poll() is None, lines
                found = [m for line in list(lines) if (m := re.search(r"on http://127\.0\.0\.1:(\d+)", line))]
                return int(found[0].group(1)) if found else None

            p = wait_until(port, TIMEOUT, message="the server's listening line")

            def idle() -> bool:
                out = subprocess.run(["curl", "-s", f"127.0.0.1:{p}/health-check"], capture_output=True,
                                     text=True, timeout=TIMEOUT).stdout
                return bool(out) and json.loads(out)["status"] == "READY"

            wait_until(idle, TIMEOUT, message="the server to be ready")  # as the README's reader would
            outputs = []
            for command in curls:
                # A person types the next example after the previous prediction ended; the
                # default model has one slot, so a new prediction waits for it to be free.
                if " -d " in command:
                    wait_until(idle, TIMEOUT, message=f"the server to be idle before {command!r}")
                command = command.replace("localhost:5000", f"127.0.0.1:{p}")
                command = command.replace("http://localhost:8000/hook", hook.url + "/hook")
                proc = _run(command, clone)
                assert proc.returncode == 0, f"{command}\n{proc.stderr}"
                assert proc.stdout.strip(), command
                outputs.append((command, proc.stdout))
            for command, out in outputs:
                if "text/event-stream" in command:
                    assert "event: completed" in out, (command, out)
                    continue
                if "/metrics" in command:
                    assert "# TYPE minicog_predictions_total counter" in out, (command, out)
                    continue
                body = json.loads(out)
                if isinstance(body, dict):
                    # Only the documented 422 example may be an error, and it is Cog's detail list.
                    assert "error" not in body and body.get("status") not in ("failed",), (command, body)
            hook.wait_for(lambda reqs: any(r.path == "/hook" and r.json()["status"] == "succeeded" for r in reqs),
                          timeout=TIMEOUT)
            server.wait(TIMEOUT)  # the last example is POST /shutdown
            assert server.returncode == 0
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(TIMEOUT)
            reader.join(TIMEOUT)
