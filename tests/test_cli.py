"""The command line's parsing: flags, -i values read by schema type, --json, error lines.

The end-to-end runs of the real command (worker processes, exit codes, files,
Ctrl-C) are in test_cli_predict.py and test_cli_serve.py.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from minicog import cli, oneshot
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
    value = oneshot.parse_input_value(text, PROPS[name], DOC, name=name)
    assert value == expected and type(value) is type(expected)


def test_values_that_do_not_parse_are_left_for_validation():
    # "abc" is not an integer: passed on as text so validation names the input.
    assert oneshot.parse_input_value("abc", PROPS["n"], DOC) == "abc"
    assert oneshot.parse_input_value("maybe", PROPS["flag"], DOC) == "maybe"


def test_a_union_with_str_tries_the_other_types_first():
    # `value: str | float` written string-first: Cog still reads "1.5" as a number.
    node = {"anyOf": [{"type": "string"}, {"type": "number"}]}
    assert oneshot.parse_input_value("1.5", node, {}) == 1.5
    assert oneshot.parse_input_value("hello", node, {}) == "hello"


def test_at_path_sends_a_local_file_as_data_uri(tmp_path):
    f = tmp_path / "note.txt"
    f.write_text("file content")
    value = oneshot.parse_input_value(f"@{f}", PROPS["doc"], DOC, name="doc")
    mime, data = parse_data_uri(value)
    assert mime.startswith("text/plain") and data == b"file content"


def test_bare_path_to_an_existing_file_works_too_and_a_missing_one_is_named(tmp_path):
    f = tmp_path / "plain.bin"
    f.write_bytes(b"\x00\x01")
    assert parse_data_uri(oneshot.parse_input_value(str(f), PROPS["doc"], DOC, name="doc"))[1] == b"\x00\x01"
    with pytest.raises(oneshot.CliError) as info:
        oneshot.parse_input_value("nofile.png", PROPS["doc"], DOC, name="doc")
    assert str(info.value) == "input \"doc\": expected @path to a local file or an http(s)/data: URL, got 'nofile.png'"


def test_repeated_i_builds_lists_of_typed_items_and_quotes_are_removed():
    # parseInputFlags + NewInputsForMode.
    grouped = oneshot.parse_input_flags(["tags=a", "tags=b", "numbers=1", "numbers=2", "n=3", 'text="quoted"'])
    assert oneshot.coerce_inputs(grouped, DOC, DOC["components"]["schemas"]["Input"]) == \
        {"tags": ["a", "b"], "numbers": [1, 2], "n": 3, "text": "quoted"}
    # A single JSON array also works for non-file lists.
    grouped = oneshot.parse_input_flags(["numbers=[4, 5]"])
    assert oneshot.coerce_inputs(grouped, DOC, DOC["components"]["schemas"]["Input"]) == {"numbers": [4, 5]}


@pytest.mark.parametrize("values, message", [
    # Each message is the one Cog's pkg/predict/input_validation_test.go expects for the case.
    ({"text": 10}, 'invalid input "text": expected string, got number'),
    ({"n": -1}, 'invalid input "n": number must be at least 0'),
    ({"color": "blue"}, 'invalid input "color": must be one of: red, green'),
    ({"n": None}, 'invalid input "n": must not be null (omit the input to use its default)'),
    ({"numbers": [1, "x"]}, 'invalid input "numbers.1": expected integer, got string'),
    ({"text": 10, "n": -1}, 'input validation failed:\n- invalid input "n": number must be at least 0\n'
                            '- invalid input "text": expected string, got number'),
])
def test_validation_messages_are_cogs(values, message):
    with pytest.raises(oneshot.CliError) as info:
        oneshot.check_inputs(values, DOC, DOC["components"]["schemas"]["Input"])
    assert str(info.value) == message


def test_nullable_inputs_accept_null_and_required_ones_are_named():
    component = dict(DOC["components"]["schemas"]["Input"], required=["text"])
    oneshot.check_inputs({"text": "t", "seed": None}, DOC, component)  # nullable: minicog's runtime takes it
    with pytest.raises(oneshot.CliError) as info:
        oneshot.check_inputs({}, DOC, component)
    assert str(info.value) == 'missing required input "text"'


def test_unknown_names_are_cogs_message():
    component = DOC["components"]["schemas"]["Input"]
    with pytest.raises(oneshot.CliError) as info:
        oneshot.check_input_names(["text", "bogus"], component)
    assert str(info.value) == ('unknown input "bogus"; valid inputs are: color, doc, extra, flag, n, numbers, '
                               'ratio, seed, tags, text')
    with pytest.raises(oneshot.CliError) as info:
        oneshot.check_input_names(["a", "b"], {"properties": {}})
    assert str(info.value) == 'unknown inputs "a", "b"; model does not accept inputs'


def test_json_inputs_inline_file_and_stdin(tmp_path):
    assert oneshot.read_json_inputs('{"text": "hi"}', io.StringIO()) == {"text": "hi"}
    p = tmp_path / "in.json"
    p.write_text('{"text": "from file"}')
    assert oneshot.read_json_inputs(f"@{p}", io.StringIO()) == {"text": "from file"}
    assert oneshot.read_json_inputs("@-", io.StringIO('{"n": 2}')) == {"n": 2}
    assert oneshot.read_json_inputs("-", io.StringIO('{"n": 3}')) == {"n": 3}
    for bad, needle in (("[1]", "cannot unmarshal array"), ("{", "Failed to parse JSON: "),
                        (f"@{tmp_path}/no.json", "Failed to read JSON from file")):
        with pytest.raises(oneshot.CliError) as info:
            oneshot.read_json_inputs(bad, io.StringIO())
        assert needle in str(info.value)


@pytest.mark.parametrize("value, text", [
    (3.0, "3"), (0.1, "0.1"), (1e-5, "0.00001"), (1e-7, "1e-7"), (1e21, "1e+21"), (12, "12"),
    ("<a&b>", '"\\u003ca\\u0026b\\u003e"'), ({"b": 1, "a": [True, None]}, '{"a":[true,null],"b":1}'),
])
def test_go_json_formatting(value, text):
    # encoding/json's float64 format, HTML escaping and sorted map keys.
    assert oneshot.go_json(value, indent=False) == text


@pytest.mark.parametrize("argv", [["serve", "--port", "70000"], ["serve", "--max-concurrency", "0"],
                                  ["serve", "--await-explicit-shutdown", "perhaps"], ["serve", "--bogus"],
                                  ["serve", "--log-format", "xml"]])
def test_usage_errors_exit_2(argv):
    proc = run_cli(*argv)
    assert proc.returncode == 2
    assert "error:" in proc.stderr


def test_predict_usage_errors_exit_1_as_cog():
    # Cog's commands exit 1 on bad flags (cmd/cog: console.Fatalf).
    proc = run_cli("predict", "--setup-timeout", "soon")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "usage: minicog predict [REF] [flags]"
    proc = run_cli("predict", "-i", "novalue")
    assert (proc.returncode, proc.stderr) == (1, "Failed to parse input 'novalue', expected format is 'name=value'\n")


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
