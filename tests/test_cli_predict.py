"""``python -m minicog predict`` / ``run`` / ``train`` / ``schema`` as real subprocesses with real workers.

Each test runs the command the way a Cog user types it and compares stdout,
stderr, the files written and the exit status with what Cog's CLI does for
the same case; the comment on each names the Go function of replicate/cog
(0.23 era: pkg/cli/predict.go, pkg/cli/train.go, pkg/predict/*.go) whose
behaviour it checks.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import pytest

from support import ROOT, Receiver, predictor, wait_until

TIMEOUT = 60


def run_cli(*args: str, cwd: str = ROOT, input: str | None = None, env: dict | None = None,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """The command's result once it ended.

    It gets a TMPDIR of its own (unless *env* names one), removed afterwards: the fixture
    models that return files (cli_files.py, cli_outputs.py:Weights, cli_train.py) write
    them with tempfile and never remove them, as a real model may.
    """
    worker_tmp = tempfile.mkdtemp(prefix="cli-tmp-")
    try:
        full_env = {**os.environ, "TMPDIR": worker_tmp, **(env or {})}
        full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
        return subprocess.run([sys.executable, "-m", "minicog", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, input=input, env=full_env)
    finally:
        shutil.rmtree(worker_tmp, ignore_errors=True)


def model_lines(stderr: str) -> list[str]:
    """stderr without the two lines runPrediction prints before predicting."""
    return [line for line in stderr.splitlines() if line not in ("Running prediction...", "Running training...", "")]


# ----------------------------------------------------------------------------- printing

def test_string_output_printed_as_is_and_logs_on_stderr():
    # runPrediction: outputSchema.Type.Is("string") → console.Output(s); console.Info
    # "Running prediction..." and a blank line on stderr first.
    proc = run_cli("predict", predictor("cli_text.py"), "-i", "name=bob")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello bob\n"
    lines = proc.stderr.splitlines()
    assert lines.index("Running prediction...") < lines.index("cli_text: log line on stdout")
    assert "cli_text: setting up" in lines and "cli_text: log line on stderr" in lines


def test_quoted_value_loses_its_quotes():
    # parseInputFlags: a value that starts and ends with '"' is unquoted.
    proc = run_cli("predict", predictor("cli_text.py"), "-i", 'name="Athena"')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello Athena\n"


def test_other_values_printed_as_go_indented_json():
    # runPrediction default branch: prettyJSONMarshal (json.Marshal of a decoded map:
    # sorted keys, <>& escaped, float64 numbers) + json.Indent with two spaces.
    proc = run_cli("predict", predictor("cli_outputs.py") + ":Numbers")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ('{\n  "alpha": "\\u003cb\\u003e\\u0026\\u003c/b\\u003e",\n'
                           '  "small": 0.00001,\n  "zeta": 3\n}\n')


def test_values_parsed_by_type_lists_by_repeating_and_at_file(tmp_path):
    # NewInputsForMode / coerceScalarValue: each value read as its schema type, a
    # repeated name is an array; @path for a file input is read from disk.
    doc = tmp_path / "doc.txt"
    doc.write_text("from a local file")
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "text=42", "-i", "n=3",
                   "-i", "ratio=0.25", "-i", "flag=true", "-i", "tags=a", "-i", "tags=b",
                   "-i", "numbers=1", "-i", "numbers=2", "-i", "color=green", "-i", f"doc=@{doc}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "text": "42", "n": 3, "ratio": 0.25, "flag": True, "tags": ["a", "b"], "numbers": [1, 2],
        "color": "green", "doc": "from a local file",
    }


def test_iterator_printed_whole_when_the_prediction_ends():
    # runPrediction: an iterator's output is the final list, printed as indented
    # JSON like any array (ConcatenateIterator included) when stdout is not a terminal.
    proc = run_cli("predict", predictor("cli_stream.py"), "-i", "count=3")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["tok0 ", "tok1 ", "tok2 "]
    assert proc.stdout.startswith('[\n  "tok0 ",\n')
    proc = run_cli("predict", predictor("cli_stream.py") + ":Items", "-i", "count=2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '[\n  {\n    "i": 0\n  },\n  {\n    "i": 1\n  }\n]\n'


def test_none_output_says_no_output_generated():
    # runPrediction: prediction.Output == nil → console.Warn("No output generated"), exit 0.
    proc = run_cli("predict", predictor("cli_outputs.py") + ":Nothing")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == "No output generated"


@pytest.mark.slow
def test_default_model_is_deterministic_with_a_seed():
    args = ("predict", "-i", "prompt=The keeper", "-i", "seed=7", "-i", "max_tokens=12")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    tokens = json.loads(first.stdout)  # a ConcatenateIterator: Cog prints the list of tokens
    assert len("".join(tokens).split()) == 12
    assert "Using seed: 7" in first.stderr and "Using seed" not in first.stdout
    assert run_cli(*args).stdout == first.stdout


# ----------------------------------------------------------------------------- files and -o

def test_file_outputs_named_output_ext_and_numbered_for_lists(tmp_path):
    # processFileOutputs + WriteDataURLToFile: "output" + the type's extension;
    # lists get output.<i>.<ext>; each file announced on stderr, nothing on stdout.
    proc = run_cli("predict", predictor("cli_files.py") + ":Single", "-i", "text=abc", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "output.txt").read_text() == "abc"
    assert proc.stdout == "" and "Written output to: output.txt" in proc.stderr.splitlines()
    proc = run_cli("predict", predictor("cli_files.py") + ":Several", "-i", "count=3", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert [(tmp_path / f"output.{i}.txt").read_text() for i in range(3)] == ["file 0", "file 1", "file 2"]
    assert [line for line in proc.stderr.splitlines() if line.startswith("Written")] == \
        [f"Written output to: output.{i}.txt" for i in range(3)]
    assert proc.stdout == ""


@pytest.mark.slow
def test_o_for_files_a_folder_and_a_trailing_slash(tmp_path):
    # ensureOutputWriteable: -o FILE keeps its extension; an existing folder gets
    # the fallback name inside it; lists get PATH.<i>.<ext> (processFileOutputs).
    proc = run_cli("predict", predictor("cli_files.py") + ":Single", "-o", str(tmp_path / "mine.dat"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mine.dat").read_text() == "single file"
    assert f"Written output to: {tmp_path / 'mine.dat'}" in proc.stderr.splitlines()
    (tmp_path / "here").mkdir()
    proc = run_cli("predict", predictor("cli_files.py") + ":Single", "-o", str(tmp_path / "here"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "here" / "output.txt").read_text() == "single file"
    # minicog also creates a folder named with a trailing slash (Cog says it is not writable).
    proc = run_cli("predict", predictor("cli_files.py") + ":Several", "-i", "count=2", "-o", f"{tmp_path}/new/")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["output.0.txt", "output.1.txt"]
    proc = run_cli("predict", predictor("cli_files.py") + ":Several", "-i", "count=2", "-o", str(tmp_path / "r.dat"))
    assert proc.returncode == 0, proc.stderr
    assert [(tmp_path / f"r.{i}.dat").read_text() for i in range(2)] == ["file 0", "file 1"]


def test_o_writes_string_and_json_outputs_to_the_file(tmp_path):
    # runPrediction: writeOutputToDisk → files.WriteFile(s) for a string (no newline
    # added), the indented JSON otherwise; "Written output to: PATH"; stdout empty.
    proc = run_cli("predict", predictor("cli_text.py"), "-o", str(tmp_path / "out.txt"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.txt").read_text() == "hello world"
    assert proc.stdout == "" and proc.stderr.splitlines()[-1] == f"Written output to: {tmp_path / 'out.txt'}"
    proc = run_cli("predict", predictor("cli_outputs.py") + ":Numbers", "-o", str(tmp_path / "n.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "n.json").read_text()) == {"alpha": "<b>&</b>", "small": 0.00001, "zeta": 3}


def test_output_path_checks(tmp_path):
    # ensureOutputWriteable: ./output being a folder with no -o, and a missing parent
    # folder, are errors (exit 1) - checked before the model starts.
    (tmp_path / "output").mkdir()
    proc = run_cli("predict", predictor("cli_text.py"), cwd=str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr == 'Default output name "output" conflicts with directory, provide --output\n'
    proc = run_cli("predict", predictor("cli_text.py"), "-o", str(tmp_path / "no" / "such" / "x.txt"))
    assert proc.returncode == 1
    assert proc.stderr == f"Output path is not writable: Output directory is not writable: {tmp_path}/no/such\n"


def test_train_writes_weights_named_as_cog_does(tmp_path):
    # cmdTrain: -o defaults to "weights", so a file output becomes weights.<ext> and
    # any other output is written to the file "weights" (runPrediction, isTrain).
    proc = run_cli("train", predictor("cli_outputs.py") + ":Weights", "-i", "steps=3", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "weights.txt").read_text() == "weights after 3 steps"
    assert proc.stdout == "" and "Written output to: weights.txt" in proc.stderr.splitlines()
    assert "Running training..." in proc.stderr.splitlines()
    proc = run_cli("train", predictor("cli_train.py") + ":Trainer", "-i", "steps=2", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    written = json.loads((tmp_path / "weights").read_text())
    assert written["steps"] == 2 and written["weights"].startswith("data:text/plain")  # nested file: a data URI


# ----------------------------------------------------------------------------- --json

def _check_record(record: dict, status: str) -> None:
    assert list(record)[:3] == ["status", "output", "error"]  # predict.Response's field order
    assert record["status"] == status
    for key in ("id", "logs", "created_at", "started_at", "completed_at"):
        assert key in record


@pytest.mark.slow
def test_json_inline_file_and_stdin_print_the_prediction_object(tmp_path):
    # parseJSONInput (inline, @file, @- and -) + runPrediction needsJSON: the whole
    # prediction as indented JSON on stdout; file outputs written to output.<ext>.
    inputs = tmp_path / "in.json"
    inputs.write_text('{"text": "from a file"}')
    for spec, stdin in (('{"text": "inline"}', None), (f"@{inputs}", None), ("@-", '{"text": "stdin"}'),
                        ("-", '{"text": "stdin"}')):
        proc = run_cli("predict", predictor("cli_types.py"), "--json", spec, input=stdin)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout)
        _check_record(record, "succeeded")
        assert record["error"] == "" and record["output"]["text"] in ("inline", "from a file", "stdin")
        assert "cli_types: got text=" in record["logs"]
        assert proc.stdout.startswith('{\n  "status": "succeeded",\n  "output": {\n    "color": "red",')
    proc = run_cli("predict", predictor("cli_files.py") + ":Single", "--json", "{}", cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"] == "output.txt"
    assert (tmp_path / "output.txt").read_text() == "single file"


def test_json_failed_prediction_prints_the_object_and_exits_1():
    # runPrediction needsJSON: the object is printed, then os.Exit(1) when not succeeded.
    proc = run_cli("predict", predictor("cli_fail.py"), "--json", "{}")
    assert proc.returncode == 1
    record = json.loads(proc.stdout)
    _check_record(record, "failed")
    assert record["output"] is None and "the model failed on purpose" in record["error"]


def test_json_with_o_writes_the_object_to_the_file(tmp_path):
    # runPrediction needsJSON + writeOutputToDisk; a name without .json gets Cog's warning.
    proc = run_cli("predict", predictor("cli_text.py"), "--json", '{"name": "x"}', "-o", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert json.loads((tmp_path / "r.json").read_text())["output"] == "hello x"
    assert proc.stderr.splitlines()[-1] == f"Written output to: {tmp_path / 'r.json'}"
    proc = run_cli("predict", predictor("cli_text.py"), "--json", "{}", "-o", str(tmp_path / "r.txt"))
    assert proc.returncode == 0, proc.stderr
    assert "--output value does not have a .json suffix: r.txt" in proc.stderr.splitlines()


def test_json_errors_worded_as_cog():
    # cmdPredict / prepareInputs: --json with -i; parseJSONInput's messages.
    proc = run_cli("predict", predictor("cli_text.py"), "--json", "{}", "-i", "name=x")
    assert (proc.returncode, proc.stderr) == (1, "Must use one of --json or --input to provide model inputs\n")
    proc = run_cli("predict", predictor("cli_text.py"), "--json", "@/no/such.json")
    assert (proc.returncode, proc.stderr) == \
        (1, 'Failed to read JSON from file "/no/such.json": open /no/such.json: no such file or directory\n')
    proc = run_cli("predict", predictor("cli_text.py"), "--json", "[1]")
    assert proc.returncode == 1
    assert proc.stderr == ("Failed to parse JSON: json: cannot unmarshal array into Go value of type "
                           "map[string]interface {}\n")


def test_json_file_and_url_inputs(tmp_path):
    # transformPathsToBase64URLs for "@path" file inputs; URLs are passed for the model to fetch.
    doc = tmp_path / "doc.txt"
    doc.write_text("read by the CLI")
    proc = run_cli("predict", predictor("cli_types.py"), "--json", json.dumps({"text": "t", "doc": f"@{doc}"}))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["output"]["doc"] == "read by the CLI"
    with Receiver(lambda rec: (200, {"Content-Type": "text/plain"}, b"fetched by the worker")) as server:
        proc = run_cli("predict", predictor("cli_types.py"), "-i", "text=x", "-i", f"doc={server.url}/again.txt")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["doc"] == "fetched by the worker"
        assert [r.path for r in server.requests] == ["/again.txt"]


# ----------------------------------------------------------------------------- errors

def test_unknown_input_fails_before_setup_runs():
    # validateKnownInputs (pkg/predict/input_validation.go), run by cmdPredict before
    # the model starts. setup() here sleeps 60 s: the command must not wait for it
    # (the subprocess deadline is below that).
    proc = run_cli("predict", predictor("cli_slow_setup.py"), "-i", "typo=1", timeout=45)
    assert proc.returncode == 1
    assert proc.stderr == 'unknown input "typo"; model does not accept inputs\n'
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "txet=1", "-i", "nn=2")
    assert proc.returncode == 1
    assert proc.stderr == ('unknown inputs "nn", "txet"; valid inputs are: color, doc, flag, n, numbers, '
                           'ratio, tags, text\n')


def test_value_problems_worded_as_cog():
    # formatInputValidationError / formatSchemaValidationError: one problem alone,
    # several under "input validation failed:", properties by name then missing ones.
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "n=abc", "-i", "color=blue")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == ('input validation failed:\n- invalid input "color": must be one of: red, green\n'
                           '- invalid input "n": expected integer, got string\n- missing required input "text"\n')
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "text=t", "-i", "n=11")
    assert (proc.returncode, proc.stderr) == (1, 'invalid input "n": number must be at most 10\n')
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "text=a", "-i", "text=b")
    assert (proc.returncode, proc.stderr) == (1, 'invalid input "text": expected string, got array\n')
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "text=t", "-i", "numbers=1", "-i", "numbers=x")
    assert (proc.returncode, proc.stderr) == (1, 'invalid input "numbers.1": expected integer, got string\n')
    proc = run_cli("train", predictor("cli_train.py") + ":Trainer", "-i", "steps=0")
    assert (proc.returncode, proc.stderr) == (1, 'invalid input "steps": number must be at least 1\n')


def test_syntax_and_missing_file_errors(tmp_path):
    # parseInputFlags: "Failed to parse input ..."; materialize(): input "x": open PATH: ...
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "novalue")
    assert (proc.returncode, proc.stderr) == (1, "Failed to parse input 'novalue', expected format is 'name=value'\n")
    proc = run_cli("predict", predictor("cli_types.py"), "-i", "text=t", "-i", f"doc=@{tmp_path}/missing.txt")
    assert (proc.returncode, proc.stderr) == (1, f'input "doc": open {tmp_path}/missing.txt: no such file or directory\n')


def test_failed_prediction_worded_as_cog():
    # runPrediction: status != succeeded → "Prediction failed with status %q: %s", exit 1.
    proc = run_cli("predict", predictor("cli_fail.py"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert "cli_fail: about to fail" in proc.stderr
    assert proc.stderr.splitlines()[-1] == \
        'Prediction failed with status "failed": Prediction failed: ValueError: the model failed on purpose'


# ----------------------------------------------------------------------------- flags

def test_setup_timeout():
    # addSetupTimeoutFlag / Predictor.waitForContainerReady: "Timed out" after the limit.
    proc = run_cli("predict", predictor("cli_slow_setup.py"), "--setup-timeout", "1", timeout=45)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == "Timed out: setup() did not finish within 1 seconds"


def test_env_flag_reaches_the_model():
    # newPredictionCommand -e/--env: environment variables for the model.
    proc = run_cli("predict", predictor("cli_outputs.py") + ":Env", "-e", "MINICOG_TEST_VAR=from -e",
                   "-i", "name=MINICOG_TEST_VAR")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "from -e\n"


def test_use_replicate_token_passes_the_token_in_the_context():
    # runPrediction: --use-replicate-token puts REPLICATE_API_TOKEN into the request
    # context, and refuses to run without it.
    proc = run_cli("predict", predictor("cli_outputs.py") + ":Token", "--use-replicate-token",
                   env={"REPLICATE_API_TOKEN": "r8_secret"})
    assert (proc.returncode, proc.stdout) == (0, "r8_secret\n"), proc.stderr
    proc = run_cli("predict", predictor("cli_outputs.py") + ":Token", "--use-replicate-token",
                   env={"REPLICATE_API_TOKEN": ""})
    assert (proc.returncode, proc.stderr) == (1, "Failed to find REPLICATE_API_TOKEN in the current environment "
                                                 "when called with --use-replicate-token\n")


def test_file_flag_names_the_cog_yaml_searched_in_parent_folders(tmp_path):
    # addConfigFlag -f + config.GetProjectDir: the file is found in the current folder or a parent.
    (tmp_path / "other.yaml").write_text(f"run: {predictor('cli_text.py')}:Runner\n"
                                         )
    (tmp_path / "sub").mkdir()
    proc = run_cli("run", "-f", "other.yaml", "-i", "name=yaml", cwd=str(tmp_path / "sub"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello yaml\n"
    proc = run_cli("predict", "-f", "nothere.yaml", cwd=str(tmp_path))
    assert (proc.returncode, proc.stderr) == (1, f"nothere.yaml not found in {tmp_path} (or in any parent directories)\n")


def test_cog_yaml_in_the_current_folder_names_the_predictor():
    proc = run_cli("predict", "-i", "text=abc", "-i", "transform=reverse", "-i", "repeat=2",
                   cwd=os.path.join(ROOT, "examples"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "cba\ncba\n"


def test_positional_reference_run_alias_and_forgotten_i():
    # newPredictionCommand("run"): `cog run` is `cog predict`; cmdPredict's check for
    # an image argument containing '=' ("Did you forget `-i`?").
    proc = run_cli("run", predictor("cli_text.py"), "-i", "name=run")
    assert (proc.returncode, proc.stdout) == (0, "hello run\n"), proc.stderr
    proc = run_cli("predict", "name=x")
    assert (proc.returncode, proc.stderr) == (1, "Invalid predictor reference 'name=x'. Did you forget `-i`?\n")


def test_unknown_flag_under_the_subcommand_usage_and_docker_flags_accepted():
    # cobra/pflag: usage of the subcommand, then "unknown flag: --x", exit 1.
    proc = run_cli("predict", "--bogus")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["usage: minicog predict [REF] [flags]", "unknown flag: --bogus"]
    proc = run_cli("train", "-z")
    assert proc.stderr.splitlines() == ["usage: minicog train [REF] [flags]", "unknown shorthand flag: 'z' in -z"]
    proc = run_cli("predict", predictor("cli_text.py"), "--gpus", "all", "--progress", "plain", "--use-cog-base-image")
    assert (proc.returncode, proc.stdout) == (0, "hello world\n"), proc.stderr


def test_help_documents_the_exit_statuses():
    proc = run_cli("predict", "--help")
    assert proc.returncode == 0
    assert "exit status: 0 success; 1 any failure" in proc.stdout and "130 interrupted" in proc.stdout


# ----------------------------------------------------------------------------- load failures

@pytest.mark.parametrize("case", ["syntax", "package", "class", "file"])
def test_load_failure_printed_once_naming_file_and_line(tmp_path, case):
    # Cog prints the container's logs then "Model setup failed" (Predictor.waitForContainerReady);
    # minicog prints the model's own traceback (no minicog frames) and one line that
    # names the file and line, once.
    (tmp_path / "syntax.py").write_text("from cog import BaseRunner\nclass Runner(BaseRunner):\n"
                                        "    def run(self) -> str\n        return 'x'\n")
    (tmp_path / "package.py").write_text("import os\nimport minicog_no_such_package_abc\n")
    (tmp_path / "klass.py").write_text("def helper():\n    pass\n")
    ref, needle = {
        "syntax": ("syntax.py", f"failed to import {tmp_path}/syntax.py (line 3): SyntaxError: expected ':'"),
        "package": ("package.py", f"failed to import {tmp_path}/package.py (line 2): ModuleNotFoundError: "
                                  "No module named 'minicog_no_such_package_abc'"),
        "class": ("klass.py:Runner", f"{tmp_path}/klass.py has no class or function named 'Runner'"),
        "file": ("missing.py", f"predictor file not found: {tmp_path}/missing.py"),
    }[case]
    if case == "syntax" and sys.version_info < (3, 10):
        pytest.skip("the SyntaxError text differs before 3.10")
    proc = run_cli("predict", ref, cwd=str(tmp_path))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count(needle) == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("Failed to load predictor: ")
    assert "minicog/" not in proc.stderr and "<frozen" not in proc.stderr, proc.stderr
    if case == "package":
        assert 'File "' + str(tmp_path / "package.py") + '", line 2, in <module>' in proc.stderr


# ----------------------------------------------------------------------------- streaming, Ctrl-C

#: Runs the rest of its command line with SIGINT ignored, as ``cmd &`` in a shell without
#: job control does (exec keeps the pid, and an ignored signal stays ignored across exec).
_SIGINT_IGNORED = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


def _spawn(*args: str, new_session: bool = False, sigint_ignored: bool = False,
           env: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), PYTHONUNBUFFERED="1",
               **(env or {}))
    prefix = [sys.executable, "-c", _SIGINT_IGNORED] if sigint_ignored else [sys.executable]
    return subprocess.Popen([*prefix, "-m", "minicog", *args], cwd=ROOT, stdout=subprocess.PIPE,
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


@pytest.mark.slow
def test_stream_flag_prints_tokens_as_they_arrive():
    # minicog's own: --stream (or a terminal) prints a ConcatenateIterator live.
    proc = _spawn("predict", predictor("cli_stream.py"), "--stream", "-i", "count=4", "-i", "pause=0.4")
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


def test_a_terminal_gets_tokens_as_they_arrive():
    # minicog's own: with stdout on a terminal, a ConcatenateIterator is printed live
    # (a pipe gets Cog's list, test_iterator_printed_whole_when_the_prediction_ends).
    import pty

    leader, follower = pty.openpty()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "minicog", "predict", predictor("cli_stream.py"), "-i", "count=3"],
                            cwd=ROOT, stdout=follower, stderr=subprocess.DEVNULL, env=env)
    os.close(follower)
    data = b""
    try:
        while True:
            if not select.select([leader], [], [], TIMEOUT)[0]:
                break  # nothing for TIMEOUT seconds: the assertions below report it
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the command closed the terminal
                break
            if not chunk:
                break
            data += chunk
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert data.replace(b"\r\n", b"\n") == b"tok0 tok1 tok2 \n"


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


@pytest.mark.parametrize("target", ["process", "group", "started-with-sigint-ignored"])
def test_ctrl_c_cancels_the_prediction_and_exits_130(tmp_path, target):
    # "group" is what a terminal's Ctrl-C does: SIGINT to the command and its worker.
    # "started-with-sigint-ignored": launched by a shell without job control (``cmd &`` in
    # a script, a CI runner), the command still takes ``kill -INT`` as Cog's does.
    marker = tmp_path / "canceled"
    proc = _spawn("predict", predictor("cli_stream.py"), "--stream", "-i", "count=1000", "-i", "pause=0.2",
                  "-i", f"marker={marker}", new_session=True, sigint_ignored=target.startswith("started"))
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
    proc = _spawn("predict", predictor("cli_slow_setup.py"), new_session=True)
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


@pytest.mark.parametrize("when", ["predict mid prediction", "predict during setup", "schema during setup"])
def test_sigterm_stops_the_worker_removes_its_temp_folder_and_exits_143(tmp_path, when):
    # `timeout`, a CI runner or a supervisor stop a command with SIGTERM.  Its default
    # action used to end the command at once and leave the engine's minicog-* folder in
    # TMPDIR (here one this test owns); now it is handled as Ctrl-C is.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    marker = tmp_path / "canceled"
    if when == "predict mid prediction":
        args = ("predict", predictor("cli_stream.py"), "--stream", "-i", "count=1000", "-i", "pause=0.2",
                "-i", f"marker={marker}")
    elif when == "predict during setup":
        args = ("predict", predictor("cli_slow_setup.py"))
    else:
        args = ("schema", "--predictor", predictor("cli_slow_setup.py"))
    proc = _spawn(*args, env={"TMPDIR": str(tmp)})
    try:
        out, err = _Reader(proc.stdout), _Reader(proc.stderr)
        if when == "predict mid prediction":
            wait_until(lambda: b"tok1 " in out.data, timeout=TIMEOUT, message="the prediction to stream")
        else:
            wait_until(lambda: b"cli_slow_setup: setting up" in err.data, timeout=TIMEOUT, message="setup to start")
        workers = _children(proc.pid)
        assert workers, "no worker process found"
        assert [p.name for p in tmp.iterdir()][0].startswith("minicog-")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 143
        err.thread.join(5)
        if when == "predict mid prediction":
            assert b"Terminated: canceling the prediction" in err.data and b"prediction canceled" in err.data
            assert marker.read_text() == "canceled"
        else:
            assert b"\nTerminated\n" in err.data, err.data[-300:]
        wait_until(lambda: not any(_alive(w) for w in workers), timeout=15, message="the worker to exit")
        assert sorted(os.listdir(tmp)) == []
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
