"""What ``serve`` / ``predict`` say and refuse at start-up, and where ``serve`` listens.

Real subprocesses: a cog.yaml Cog would refuse stops the command before any
worker starts, with an error naming the file, the line and the key; notes about
ignored keys and the built-in demo model are logged; the server binds
127.0.0.1 unless ``--host`` / ``HOST`` say otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from support import ROOT, predictor, wait_until

TIMEOUT = 60


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PORT", "HOST", "COG_PREDICT_TYPE_STUB", "COG_TRAIN_TYPE_STUB")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["MINICOG_SHUTDOWN_GRACE_PERIOD"] = "5"
    env.update(extra)
    return env


def run_cli(*args: str, cwd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minicog", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, env=env or _env())


class Server:
    """``python -m minicog serve --port 0 ARGS`` with stderr collected line by line."""

    def __init__(self, *args: str, cwd: str, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "minicog", "serve", "--port", "0", *args], cwd=cwd,
                                     env=env or _env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, pattern: str) -> re.Match:
        rx = re.compile(pattern)

        def found():
            for line in list(self.lines):
                if m := rx.search(line):
                    return m
            assert self.proc.poll() is None, f"server exited: {self.lines}"
            return None

        return wait_until(found, TIMEOUT, message=f"a log line matching {pattern!r}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(TIMEOUT)
        self.reader.join(TIMEOUT)
        return code


@pytest.fixture
def servers():
    started: list[Server] = []

    def start(*args: str, **kw) -> Server:
        s = Server(*args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
        s.proc.wait(TIMEOUT)


def _write(folder, text: str) -> str:
    path = os.path.join(str(folder), "cog.yaml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


# ------------------------------------------------------------------ cog.yaml refused

@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["predict"]])
def test_misspelled_key_stops_the_command_naming_file_line_and_key(tmp_path, command):
    path = _write(tmp_path, "build:\n  python_version: '3.11'\npredictor: predict.py:Runner\n")
    (tmp_path / "predict.py").write_text("raise SystemExit('the model must not be imported')\n")
    started = time.monotonic()
    proc = run_cli(*command, cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    # serve prefixes "error: "; predict prints the message bare, as cog does (console.Fatalf).
    prefix = "error: " if command[0] == "serve" else ""
    error = [line for line in proc.stderr.splitlines() if line.startswith(f"{prefix}{path}")]
    assert error == [f"{prefix}{path}, line 3: unknown top-level key 'predictor' (did you mean 'predict'?); "
                     "Cog refuses it. The keys cog.yaml may have are: build, concurrency, environment, image, "
                     "model, predict, run, train, weights"], proc.stderr
    assert "demo model" not in proc.stderr and "serving" not in proc.stderr
    assert time.monotonic() - started < TIMEOUT


@pytest.mark.parametrize("mode_args,key", [(["serve", "--port", "0"], "'run:' (or 'predict:')"),
                                           (["predict"], "'run:' (or 'predict:')"),
                                           (["train"], "'train:'"),
                                           (["serve", "--port", "0", "--x-mode", "train"], "'train:'")])
def test_cog_yaml_that_names_no_model_is_an_error_not_the_demo_model(tmp_path, mode_args, key):
    path = _write(tmp_path, "build:\n  gpu: false\n")
    proc = run_cli(*mode_args, cwd=str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    prefix = "error: " if mode_args[0] == "serve" else ""  # predict/train: bare, as cog prints it
    assert f"\n{prefix}{path}: no {key} key names the" in "\n" + proc.stderr
    assert "demo model" not in proc.stderr


def test_unreadable_cog_yaml_is_an_error(tmp_path):
    os.mkdir(tmp_path / "cog.yaml")  # exists, cannot be read as a file (root reads any mode)
    proc = run_cli("predict", cwd=str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{tmp_path / 'cog.yaml'}: cannot be read: ")  # bare, as cog prints it


def test_bad_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "run: predict.py:Runner\nbuild:\n\tgpu: true\n")
    proc = run_cli("serve", "--port", "0", cwd=str(tmp_path))
    assert proc.returncode == 1
    assert f"error: {path}, line 3: tab characters cannot be used for indentation" in proc.stderr


def test_a_reference_on_the_command_line_does_not_excuse_a_refused_cog_yaml(tmp_path):
    path = _write(tmp_path, "run: predict.py:Runner\ntypo_key: 1\n")
    proc = run_cli("predict", "--predictor", predictor("cli_text.py"), "-i", "name=x", cwd=str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"{path}, line 2: unknown top-level key 'typo_key'")  # bare, as cog prints it


def test_a_reference_overrides_a_cog_yaml_without_run(tmp_path):
    _write(tmp_path, "build:\n  gpu: false\n")
    proc = run_cli("predict", "--predictor", predictor("cli_text.py"), "-i", "name=x", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello x\n"


# ------------------------------------------------------------------ what is served, said plainly

def test_ignored_keys_are_noted_in_the_start_up_log(servers, tmp_path):
    path = _write(tmp_path, f"build:\n  python_version: '3.11'\nimage: r8.im/me/model\nrun: {predictor('cli_text.py')}:Runner\n")
    server = servers(cwd=str(tmp_path))
    server.wait_line(re.escape(f"{path}: build.* is ignored by minicog"))
    server.wait_line(re.escape(f"{path}: 'image' is ignored by minicog"))
    server.wait_line(r"serving .*cli_text\.py:Runner")
    assert not any("demo model" in line for line in server.lines)
    assert server.stop() == 0


@pytest.mark.slow
def test_the_demo_model_is_announced_with_how_to_name_a_model(servers, tmp_path):
    server = servers(cwd=str(tmp_path))
    m = server.wait_line(r"INFO minicog\.cli: no model was named .*built-in demo model.*(predict\.py:Runner)")
    assert str(tmp_path) in m.string
    server.wait_line(r"ready: setup succeeded")
    assert server.stop() == 0
    proc = run_cli("predict", "-i", "max_tokens=2", "-i", "seed=1", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("minicog: no model was named")
    assert "minicog:" not in proc.stdout


# ------------------------------------------------------------------ where it listens

def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except ConnectionRefusedError:
        return False


@pytest.mark.slow
def test_binds_loopback_by_default_and_host_or_flag_choose_another_address(servers, tmp_path):
    target = predictor("cli_text.py")
    server = servers(target, cwd=str(tmp_path))
    port = int(server.wait_line(r"on http://127\.0\.0\.1:(\d+)").group(1))
    assert _connects("127.0.0.1", port)
    # Not every interface: another loopback address of this machine is refused.
    assert not _connects("127.0.0.2", port)
    assert server.stop() == 0

    server = servers(target, cwd=str(tmp_path), env=_env(HOST="127.0.0.2"))
    port = int(server.wait_line(r"on http://127\.0\.0\.2:(\d+)").group(1))
    assert _connects("127.0.0.2", port) and not _connects("127.0.0.1", port)
    assert server.stop() == 0

    server = servers(target, "--host", "127.0.0.3", cwd=str(tmp_path), env=_env(HOST="127.0.0.2"))
    port = int(server.wait_line(r"on http://127\.0\.0\.3:(\d+)").group(1))
    assert _connects("127.0.0.3", port) and not _connects("127.0.0.2", port)
    assert server.stop() == 0
