"""The command line's parsing: flags, -i values read by schema type, --json, error lines.

The end-to-end runs of the real command (worker processes, exit codes, files,
Ctrl-C) are in test_cli_predict.py and test_cli_serve.py.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from minicog import cli
from minicog._version import COG_VERSION, __version__
from minicog.files import parse_data_uri
from minicog.settings import Settings
from support import ROOT

# A schema fragment in the layout minicog's schema builder and Cog's generator emit.
DOC = {
    "components": {
        "schemas": {
            "Input": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "n": {"type": "integer", "minimum": 0},
                    "ratio": {"type": "number"},
                    "flag": {"type": "boolean"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "numbers": {"type": "array", "items": {"type": "integer"}},
                    "color": {"allOf": [{"$ref": "#/components/schemas/color"}], "default": "red"},
                    "doc": {"type": "string", "format": "uri"},
                    "seed": {"type": "integer", "nullable": True},
                    "extra": {"type": "object"},
                },
            },
            "color": {"type": "string", "enum": ["red", "green"], "title": "color"},
            "level": {"type": "integer", "enum": [1, 2]},
        }
    }
}
PROPS = DOC["components"]["schemas"]["Input"]["properties"]


def run_cli(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minicog", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.mark.parametrize("name, text, expected", [
    ("n", "42", 42),
    ("n", "-3", -3),
    ("ratio", "0.25", 0.25),
    ("ratio", "2", 2),
    ("flag", "true", True),
    ("flag", "False", False),
    ("flag", "1", True),
    ("text", "42", "42"),          # a string input keeps digits as text
    ("text", "@not-a-file", "@not-a-file"),  # @ only means a file for file inputs
    ("color", "green", "green"),   # enum behind allOf/$ref: its type is string
    ("seed", "null", None),        # nullable
    ("seed", "7", 7),
    ("extra", '{"a": 1}', {"a": 1}),
    ("doc", "https://example.com/x.png", "https://example.com/x.png"),  # URLs pass through
])
def test_values_are_read_as_their_schema_type(name, text, expected):
    value = cli.parse_input_value(text, PROPS[name], DOC, name=name)
    assert value == expected and type(value) is type(expected)


def test_values_that_do_not_parse_are_left_for_validation():
    # "abc" is not an integer: passed on as text so validation names the input.
    assert cli.parse_input_value("abc", PROPS["n"], DOC) == "abc"
    assert cli.parse_input_value("maybe", PROPS["flag"], DOC) == "maybe"


def test_a_union_with_str_tries_the_other_types_first():
    # `value: str | float` written string-first: Cog still reads "1.5" as a number.
    node = {"anyOf": [{"type": "string"}, {"type": "number"}]}
    assert cli.parse_input_value("1.5", node, {}) == 1.5
    assert cli.parse_input_value("hello", node, {}) == "hello"


def test_at_path_sends_a_local_file_as_data_uri(tmp_path):
    f = tmp_path / "note.txt"
    f.write_text("file content")
    value = cli.parse_input_value(f"@{f}", PROPS["doc"], DOC, name="doc")
    mime, data = parse_data_uri(value)
    assert mime.startswith("text/plain") and data == b"file content"


def test_bare_path_to_an_existing_file_works_too_and_a_missing_one_is_named(tmp_path):
    f = tmp_path / "plain.bin"
    f.write_bytes(b"\x00\x01")
    assert parse_data_uri(cli.parse_input_value(str(f), PROPS["doc"], DOC, name="doc"))[1] == b"\x00\x01"
    with pytest.raises(cli.UsageError) as info:
        cli.parse_input_value("nofile.png", PROPS["doc"], DOC, name="doc")
    assert info.value.problems == ["input 'doc': expected @path to a local file or an http(s)/data: URL, got 'nofile.png'"]


def test_at_path_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(cli.UsageError) as info:
        cli.build_inputs([f"doc=@{tmp_path}/missing.png"], {}, DOC, "Input")
    assert info.value.problems == [f"input 'doc': no such file: {tmp_path}/missing.png"]


def test_repeated_i_builds_lists_of_typed_items():
    inputs = cli.build_inputs(["tags=a", "tags=b", "numbers=1", "numbers=2", "n=3"], {}, DOC, "Input")
    assert inputs == {"tags": ["a", "b"], "numbers": [1, 2], "n": 3}
    # A single JSON array also works for non-file lists.
    assert cli.build_inputs(["numbers=[4, 5]"], {}, DOC, "Input") == {"numbers": [4, 5]}


def test_every_problem_reported_naming_the_input():
    with pytest.raises(cli.UsageError) as info:
        cli.build_inputs(["nope=1", "n=1", "n=2", "broken"], {}, DOC, "Input")
    problems = info.value.problems
    assert len(problems) == 3
    assert problems[0] == "-i 'broken': expected NAME=VALUE"
    assert problems[1].startswith("input 'nope': unknown input (this predictor takes: ")
    assert problems[2] == "input 'n': given 2 times but it takes one value"


def test_json_inputs_inline_file_stdin_and_i_overrides(tmp_path):
    assert cli.read_json_inputs('{"text": "hi"}', io.StringIO()) == {"text": "hi"}
    p = tmp_path / "in.json"
    p.write_text('{"input": {"text": "from file"}}')  # Cog's request shape is unwrapped
    assert cli.read_json_inputs(f"@{p}", io.StringIO()) == {"text": "from file"}
    assert cli.read_json_inputs("-", io.StringIO('{"n": 2}')) == {"n": 2}
    assert cli.build_inputs(["n=5"], {"n": 1, "text": "x"}, DOC, "Input") == {"n": 5, "text": "x"}
    for bad, needle in (("[1]", "expected a JSON object"), ("{", "not valid JSON"), (f"@{tmp_path}/no.json", "cannot read")):
        with pytest.raises(cli.UsageError) as info:
            cli.read_json_inputs(bad, io.StringIO())
        assert needle in str(info.value)


def test_validation_detail_becomes_one_line_per_input():
    detail = [
        {"loc": ["body", "input", "n"], "msg": "-1 is less than the minimum of 0", "type": "value_error"},
        {"loc": ["body", "input", "text"], "msg": "Field required", "type": "value_error.missing"},
        {"loc": ["body", "input", "tags/1"], "msg": '3 is not of type "string"', "type": "value_error"},
    ]
    assert cli.format_validation_errors(detail) == [
        "input 'n': -1 is less than the minimum of 0",
        "input 'text': Field required",
        "input 'tags/1': 3 is not of type \"string\"",
    ]


@pytest.mark.parametrize("argv, expected", [
    ([], False), (["--await-explicit-shutdown"], True), (["--await-explicit-shutdown", "true"], True),
    (["--await-explicit-shutdown", "false"], False), (["--await-explicit-shutdown=false"], False),
])
def test_await_explicit_shutdown_bare_flag_and_values(argv, expected):
    args = cli.build_parser().parse_args(["serve", *argv])
    assert args.await_explicit_shutdown is expected


def test_serve_flags_parse():
    args = cli.build_parser().parse_args([
        "serve", "model.py:Runner", "--host", "127.0.0.1", "--port", "0", "--upload-url", "http://u/",
        "--x-mode", "train", "--max-concurrency", "4", "--log-format", "json"])
    assert (args.ref, args.host, args.port, args.upload_url, args.x_mode, args.max_concurrency, args.log_format) == (
        "model.py:Runner", "127.0.0.1", 0, "http://u/", "train", 4, "json")


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"minicog {__version__} (Cog {COG_VERSION} API)"


def test_no_subcommand_prints_help():
    proc = run_cli()
    assert proc.returncode == 0
    for command in ("serve", "predict", "train", "schema"):
        assert command in proc.stdout


@pytest.mark.parametrize("command", ["serve", "predict", "train", "schema"])
def test_help_on_every_subcommand(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"usage: minicog {command}")
    assert "--predictor" in proc.stdout


def test_serve_help_explains_every_flag_and_lists_environment_variables():
    out = run_cli("serve", "--help").stdout
    for flag in ("--host", "--port", "--upload-url", "--await-explicit-shutdown", "--x-mode",
                 "--max-concurrency", "--log-format", "REF"):
        assert flag in out
    for env in Settings.environment_variables():
        assert env in out
    assert "COG_PREDICT_TYPE_STUB" in out


@pytest.mark.parametrize("argv", [["serve", "--port", "70000"], ["serve", "--max-concurrency", "0"],
                                  ["serve", "--await-explicit-shutdown", "perhaps"], ["predict", "--bogus"],
                                  ["serve", "--log-format", "xml"]])
def test_usage_errors_exit_2(argv):
    proc = run_cli(*argv)
    assert proc.returncode == 2
    assert "error:" in proc.stderr


def test_bad_i_syntax_exits_2_before_starting_anything():
    proc = run_cli("predict", "-i", "novalue")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: -i 'novalue': expected NAME=VALUE"


def test_console_script_entry_point_is_main(capsys):
    import configparser
    import os

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    assert cfg["options.entry_points"]["console_scripts"].strip() == "minicog = minicog.cli:main"
    # The console script calls main() with no arguments, which reads sys.argv like python -m.
    assert cli.main([]) == cli.EXIT_OK
    assert "usage: minicog" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out
