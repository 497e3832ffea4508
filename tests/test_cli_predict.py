"""``python -m minicog predict`` / ``train`` / ``schema`` run as real subprocesses with real workers.

Each test runs the command the way a user types it and checks stdout (the
output only), stderr (logs and errors) and the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from support import ROOT, Receiver, predictor, wait_until

TIMEOUT = 60


def run_cli(*args: str, cwd: str = ROOT, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "minicog", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT, input=input, env=full_env)


def test_default_model_streams_text_deterministically_with_a_seed():
    args = ("predict", "-i", "prompt=The keeper", "-i", "seed=7", "-i", "max_tokens=12")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip(), "no text generated"
    assert "textgen: learned" in first.stderr  # setup logs on stderr
    assert "Using seed: 7" in first.stderr     # prediction logs on stderr
    assert "Using seed" not in first.stdout    # stdout carries only the output
    second = run_cli(*args)
    assert second.stdout == first.stdout
    # 12 word tokens: 12 runs of non-space characters.
    assert len(first.stdout.split()) == 12


def test_string_output_printed_as_is_and_logs_on_stderr():
    proc = run_cli("predict", "--predictor", predictor("cli_text.py"), "-i", "name=bob")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello bob\n"
    for line in ("cli_text: setting up", "cli_text: log line on stdout", "cli_text: log line on stderr"):
        assert line in proc.stderr


def test_values_parsed_by_type_lists_by_repeating_and_at_file(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("from a local file")
    proc = run_cli("predict", "--predictor", predictor("cli_types.py"), "-i", "text=42", "-i", "n=3",
                   "-i", "ratio=0.25", "-i", "flag=true", "-i", "tags=a", "-i", "tags=b",
                   "-i", "numbers=1", "-i", "numbers=2", "-i", "color=green", "-i", f"doc=@{doc}")
    assert proc.returncode == 0, proc.stderr
    # Anything that is not a string is printed as indented JSON.
    assert proc.stdout.startswith("{\n  ")
    assert json.loads(proc.stdout) == {
        "text": "42", "n": 3, "ratio": 0.25, "flag": True, "tags": ["a", "b"], "numbers": [1, 2],
        "color": "green", "doc": "from a local file",
    }


def test_json_from_stdin_with_i_override():
    proc = run_cli("predict", "--predictor", predictor("cli_types.py"), "--json", "-", "-i", "n=9",
                   input='{"text": "hi", "n": 1, "tags": ["x"]}')
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["text"], out["n"], out["tags"]) == ("hi", 9, ["x"])


def test_bad_input_exits_2_with_one_line_per_problem():
    proc = run_cli("predict", "--predictor", predictor("cli_types.py"), "-i", "n=abc", "-i", "color=blue",
                   "-i", "numbers=1", "-i", "numbers=x")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert any(line.startswith("error: input 'n': ") and '"abc"' in line for line in errors), errors
    assert any(line.startswith("error: input 'color': ") and "blue" in line for line in errors), errors
    assert any(line.startswith("error: input 'numbers") for line in errors), errors
    assert "error: input 'text': Field required" in errors
    assert proc.stdout == ""


def test_problems_found_while_reading_values_do_not_hide_validation_problems(tmp_path):
    # An unknown input, a missing @file, an input given twice and two out-of-range
    # values: all five reported at once, each on its own line naming its input.
    proc = run_cli("predict", "--predictor", predictor("cli_types.py"), "-i", "text=t", "-i", "bogus=1",
                   "-i", f"doc=@{tmp_path}/missing.txt", "-i", "flag=true", "-i", "flag=false",
                   "-i", "n=11", "-i", "color=blue")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert sorted(e.split("'")[1] for e in errors) == ["bogus", "color", "doc", "flag", "n"], proc.stderr
    assert f"error: input 'doc': no such file: {tmp_path}/missing.txt" in errors
    assert proc.stdout == ""


def test_json_from_a_file_and_a_url_passed_through_for_the_worker_to_fetch(tmp_path):
    inputs = tmp_path / "inputs.json"
    with Receiver(lambda rec: (200, {"Content-Type": "text/plain"}, b"fetched by the worker")) as server:
        inputs.write_text(json.dumps({"text": "from json", "doc": f"{server.url}/doc.txt"}))
        proc = run_cli("predict", "--predictor", predictor("cli_types.py"), "--json", f"@{inputs}")
        assert proc.returncode == 0, proc.stderr
        assert [r.path for r in server.requests] == ["/doc.txt"]
        out = json.loads(proc.stdout)
        assert (out["text"], out["doc"]) == ("from json", "fetched by the worker")
        proc = run_cli("predict", "--predictor", predictor("cli_types.py"), "-i", "text=x",
                       "-i", f"doc={server.url}/again.txt")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["doc"] == "fetched by the worker"
        assert [r.path for r in server.requests] == ["/doc.txt", "/again.txt"]


def test_o_numbers_a_list_of_files(tmp_path):
    proc = run_cli("predict", "--predictor", predictor("cli_files.py") + ":Several", "-i", "count=2",
                   "-o", str(tmp_path / "res.dat"))
    assert proc.returncode == 0, proc.stderr
    assert [(tmp_path / f"res.{i}.dat").read_text() for i in range(2)] == ["file 0", "file 1"]
    assert json.loads(proc.stdout) == [str(tmp_path / f"res.{i}.dat") for i in range(2)]


def test_train_bad_input_exits_2_and_failed_training_exits_1():
    proc = run_cli("train", "--predictor", predictor("cli_train.py") + ":Trainer", "-i", "steps=0")
    assert proc.returncode == 2
    assert "error: input 'steps': 0 is less than the minimum of 1" in proc.stderr.splitlines()
    proc = run_cli("train", "--predictor", predictor("cli_train.py") + ":Broken")
    assert proc.returncode == 1, proc.stderr
    assert "cli_train: broken training starts" in proc.stderr
    assert "error: Training failed: RuntimeError: training diverged after 2 steps" in proc.stderr.splitlines()
    assert proc.stdout == ""


def test_out_of_range_and_unknown_inputs_exit_2():
    proc = run_cli("predict", "-i", "max_tokens=0", "-i", "temperature=9", "-i", "unit=byte")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, proc.stderr
    assert {e.split("'")[1] for e in errors} == {"max_tokens", "temperature", "unit"}
    proc = run_cli("predict", "-i", "promt=typo")
    assert proc.returncode == 2
    assert "error: input 'promt': unknown input" in proc.stderr and "prompt" in proc.stderr


def test_failed_prediction_exits_1_showing_error_and_logs():
    proc = run_cli("predict", "--predictor", predictor("cli_fail.py"))
    assert proc.returncode == 1
    assert "cli_fail: about to fail" in proc.stderr
    assert "the model failed on purpose" in proc.stderr
    assert proc.stdout == ""


def test_setup_failure_exits_1(tmp_path):
    proc = run_cli("predict", "--predictor", str(tmp_path / "missing.py"))
    assert proc.returncode == 1
    assert "missing.py" in proc.stderr


def test_file_output_written_to_output_dir_and_to_o(tmp_path):
    proc = run_cli("predict", "--predictor", predictor("cli_files.py") + ":Single", "-i", "text=abc",
                   "--output-dir", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "out" / "output.txt"
    assert target.read_text() == "abc"
    assert proc.stdout.strip() == str(target)
    proc = run_cli("predict", "--predictor", predictor("cli_files.py") + ":Single", "-o", str(tmp_path / "mine.txt"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mine.txt").read_text() == "single file"


def test_list_of_files_numbered(tmp_path):
    proc = run_cli("predict", "--predictor", predictor("cli_files.py") + ":Several", "-i", "count=3", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for i in range(3):
        assert (tmp_path / f"output.{i}.txt").read_text() == f"file {i}"
    # A list (not an iterator) is printed whole, as indented JSON, with the paths written.
    assert json.loads(proc.stdout) == [f"output.{i}.txt" for i in range(3)]


def test_train_writes_weights_to_disk(tmp_path):
    proc = run_cli("train", "--predictor", predictor("cli_train.py") + ":Trainer", "-i", "steps=3", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["steps"] == 3
    assert out["weights"] == "output.weights.txt"
    assert (tmp_path / "output.weights.txt").read_text() == "weights after 3 steps"
    assert "cli_train: training for 3 steps" in proc.stderr


def test_iterator_items_printed_one_per_line():
    proc = run_cli("predict", "--predictor", predictor("cli_stream.py") + ":Items", "-i", "count=2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == json.dumps({"i": 0}, indent=2) + "\n" + json.dumps({"i": 1}, indent=2) + "\n"


def _spawn(*args: str, new_session: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "minicog", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=new_session)


class _Reader:
    """Collects a pipe in a thread so the test can wait on partial output with a deadline."""

    def __init__(self, pipe):
        self.data = b""
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.thread.start()

    def _run(self, pipe):
        for chunk in iter(lambda: pipe.read1(4096), b""):
            self.data += chunk


def test_streamed_output_printed_as_it_arrives():
    proc = _spawn("predict", "--predictor", predictor("cli_stream.py"), "-i", "count=4", "-i", "pause=0.4")
    try:
        out, _err = _Reader(proc.stdout), _Reader(proc.stderr)  # stderr drained so the pipe never fills
        wait_until(lambda: b"tok0 " in out.data, timeout=TIMEOUT, message="the first token")
        # The first token is on stdout while the prediction is still running.
        assert proc.poll() is None and b"tok3" not in out.data
        assert proc.wait(timeout=TIMEOUT) == 0
        out.thread.join(5)
        assert out.data == b"tok0 tok1 tok2 tok3 \n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("target", ["process", "group"])
def test_ctrl_c_cancels_the_prediction_and_exits_130(tmp_path, target):
    # "group" is what a terminal's Ctrl-C does: SIGINT to the command and its worker.
    marker = tmp_path / "canceled"
    proc = _spawn("predict", "--predictor", predictor("cli_stream.py"), "-i", "count=1000", "-i", "pause=0.2",
                  "-i", f"marker={marker}", new_session=True)
    try:
        out, err = _Reader(proc.stdout), _Reader(proc.stderr)
        wait_until(lambda: b"tok1 " in out.data, timeout=TIMEOUT, message="the prediction to stream")
        workers = _children(proc.pid)
        assert workers, "no worker process found"
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=TIMEOUT) == 130
        err.thread.join(5)
        assert b"canceling the prediction" in err.data
        assert b"prediction canceled" in err.data
        # The model saw the cancel (CancelationException), and the worker is gone.
        assert marker.read_text() == "canceled"
        wait_until(lambda: not any(_alive(w) for w in workers), timeout=15, message="the worker to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_ctrl_c_during_setup_exits_130_at_once_and_stops_the_worker():
    proc = _spawn("predict", "--predictor", predictor("cli_slow_setup.py"), new_session=True)
    try:
        _out, err = _Reader(proc.stdout), _Reader(proc.stderr)
        wait_until(lambda: b"cli_slow_setup: setting up" in err.data, timeout=TIMEOUT, message="setup to start")
        workers = _children(proc.pid)
        assert workers, "no worker process found"
        proc.send_signal(signal.SIGINT)
        # setup() sleeps 60 s: the command must not wait for it.
        assert proc.wait(timeout=15) == 130
        err.thread.join(5)
        assert b"\nInterrupted\n" in err.data and b"canceling" not in err.data, err.data[-300:]
        wait_until(lambda: not any(_alive(w) for w in workers), timeout=15, message="the worker to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_schema_prints_the_openapi_document():
    proc = run_cli("schema")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["openapi"] == "3.0.2"
    props = doc["components"]["schemas"]["Input"]["properties"]
    assert {"prompt", "max_tokens", "temperature", "seed", "unit", "order"} <= set(props)
    assert props["max_tokens"]["minimum"] == 1 and props["max_tokens"]["maximum"] == 5000
    assert props["seed"].get("nullable") is True
    assert doc["components"]["schemas"]["Output"].get("x-cog-array-display") == "concatenate"


def test_cog_yaml_in_the_current_folder_names_the_predictor():
    proc = run_cli("predict", "-i", "text=abc", "-i", "transform=reverse", "-i", "repeat=2",
                   cwd=os.path.join(ROOT, "examples"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "cba\ncba\n"
