"""cog.yaml: the YAML subset reader and Cog's rules for the keys minicog uses."""

import math
import textwrap

import pytest

from minicog.config import CogConfig, find_cog_yaml, load_cog_yaml, parse_yaml
from minicog.errors import ConfigError


def y(text):
    return parse_yaml(textwrap.dedent(text))


def write(tmp_path, text):
    path = tmp_path / "cog.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


# ------------------------------------------------------------------ parsing

def test_typical_cog_yaml():
    doc = y("""
        # Configuration for Cog
        build:
          gpu: true
          cuda: "11.8"
          python_version: "3.11"   # quoted, as Cog's docs say
          python_packages:
            - "torch==2.0.1"
            - numpy==1.26
          system_packages: [ffmpeg, 'libgl1']
          run:
            - curl -o /x https://example.com/a#b
            - command: pip install private
              mounts:
                - type: secret
                  id: pip
                  target: /etc/pip.conf
        predict: "predict.py:Predictor"
        image: r8.im/user/model
        concurrency:
          max: 4
        environment:
        - HF_HOME=/src/hf
        """)
    assert doc == {
        "build": {
            "gpu": True, "cuda": "11.8", "python_version": "3.11",
            "python_packages": ["torch==2.0.1", "numpy==1.26"],
            "system_packages": ["ffmpeg", "libgl1"],
            "run": ["curl -o /x https://example.com/a#b",
                    {"command": "pip install private",
                     "mounts": [{"type": "secret", "id": "pip", "target": "/etc/pip.conf"}]}],
        },
        "predict": "predict.py:Predictor",
        "image": "r8.im/user/model",
        "concurrency": {"max": 4},
        "environment": ["HF_HOME=/src/hf"],
    }


def test_scalars_follow_yaml_12_core_schema():
    doc = y("""
        i: 42
        neg: -7
        hex: 0x1F
        oct: 0o17
        f: 1.5
        e: 1e3
        ver: 3.10
        inf: .inf
        t: true
        F: False
        yes: yes
        n1: null
        n2: ~
        n3:
        s: hello world
        colon: a:b
        hash: a#b
        sq: 'it''s'
        dq: "tab\\tnl\\nq\\"u\\u00e9"
        """)
    assert doc["i"] == 42 and doc["neg"] == -7 and doc["hex"] == 31 and doc["oct"] == 15
    assert doc["f"] == 1.5 and doc["e"] == 1000.0 and doc["ver"] == 3.1
    assert math.isinf(doc["inf"])
    assert doc["t"] is True and doc["F"] is False and doc["yes"] == "yes"
    assert doc["n1"] is None and doc["n2"] is None and doc["n3"] is None
    assert doc["s"] == "hello world" and doc["colon"] == "a:b" and doc["hash"] == "a#b"
    assert doc["sq"] == "it's"
    assert doc["dq"] == 'tab\tnl\nq"u\u00e9'


def test_flow_collections_nested_and_multiline():
    doc = y("""
        a: [1, "two", [3, 4], {k: v}]
        b: {x: 1, "y": [a, b]}
        c: [
          one,
          two
        ]
        d: []
        e: {}
        """)
    assert doc == {"a": [1, "two", [3, 4], {"k": "v"}], "b": {"x": 1, "y": ["a", "b"]},
                   "c": ["one", "two"], "d": [], "e": {}}


def test_block_scalars():
    doc = y("""
        lit: |
          line one
            indented
          # not a comment

        keep: |+
          a

        strip: |-
          a
          b
        fold: >
          folded
          text

          para
        after: 1
        """)
    assert doc["lit"] == "line one\n  indented\n# not a comment\n"
    assert doc["keep"] == "a\n\n"
    assert doc["strip"] == "a\nb"
    assert doc["fold"] == "folded text\npara\n"
    assert doc["after"] == 1


def test_document_markers_comments_and_empty():
    assert y("") is None
    assert y("# only a comment\n") is None
    assert y("---\na: 1\n...\n# trailing\n") == {"a": 1}


def test_sequences_of_sequences_and_nested_items():
    doc = y("""
        - a
        -
          - b
          - c
        - k: 1
          l: [2]
        """)
    assert doc == ["a", ["b", "c"], {"k": 1, "l": [2]}]


@pytest.mark.parametrize("text,line,fragment", [
    ("a: 1\n  b: 2\n", 2, "unexpected indentation"),
    ("a: &x 1\n", 1, "anchors, aliases and tags"),
    ("a: *x\n", 1, "anchors, aliases and tags"),
    ("a: !!str 1\n", 1, "anchors, aliases and tags"),
    ("a: 1\na: 2\n", 2, "duplicate key 'a'"),
    ("a:\n\tb: 1\n", 2, "tab characters"),
    ('a: "unterminated\n', 1, "unterminated double-quoted string"),
    ("a: [1, 2\n", 1, "unclosed '['"),
    ("a: plain\n  continued\n", 2, "several lines"),
    ("a: 1\n---\nb: 2\n", 2, "only one YAML document"),
    ("just text\nmore: 1\n", 2, "unexpected"),
    ("? complex\n", 1, "complex mapping keys"),
    ("a: |x\n  t\n", 1, "unsupported block scalar header"),
    ('a: "bad \\q escape"\n', 1, "invalid escape"),
    ("- a\nb: 1\n", 2, "unexpected content"),
])
def test_unreadable_yaml_names_the_line(text, line, fragment):
    with pytest.raises(ConfigError) as exc:
        parse_yaml(text, path="cog.yaml")
    assert exc.value.line == line
    assert fragment in str(exc.value)
    assert str(exc.value).startswith(f"cog.yaml, line {line}: ")


# -------------------------------------------------------------- cog.yaml rules

def test_load_run_key(tmp_path):
    config = load_cog_yaml(write(tmp_path, """
        build:
          python_version: "3.12"
        run: "run.py:Runner"
        train: "train.py:train"
        """))
    assert isinstance(config, CogConfig)
    assert config.predict == "run.py:Runner"
    assert config.train == "train.py:train"
    assert config.concurrency_max is None
    assert config.directory == str(tmp_path)
    assert any(n.startswith("build.* is ignored by minicog") for n in config.notes)


def test_load_deprecated_predict_key(tmp_path):
    config = load_cog_yaml(write(tmp_path, 'predict: "predict.py:Predictor"\n'))
    assert config.predict == "predict.py:Predictor"
    assert "'predict:' is deprecated in Cog; use 'run:'" in config.notes


def test_run_and_predict_together_is_cogs_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_cog_yaml(write(tmp_path, 'run: "run.py:Runner"\npredict: "predict.py:Predictor"\n'))
    assert "only one of run or predict can be set" in str(exc.value)
    assert exc.value.line == 2


@pytest.mark.parametrize("key,example", [("run", "run.py:Runner"), ("predict", "predict.py:Predictor"),
                                         ("train", "train.py:Trainer")])
def test_reference_form_is_checked(tmp_path, key, example):
    with pytest.raises(ConfigError) as exc:
        load_cog_yaml(write(tmp_path, f"build: {{}}\n{key}: predict\n"))
    assert f"{key}: must be in the form '{example}'" in str(exc.value)
    assert exc.value.line == 2


def test_concurrency_max(tmp_path):
    assert load_cog_yaml(write(tmp_path, "concurrency:\n  max: 8\n")).concurrency_max == 8
    for bad, msg in (("0", "concurrency.max: must be at least 1 (got 0)"),
                     ("two", "concurrency.max: must be an integer (got 'two')"),
                     ("true", "concurrency.max: must be an integer (got True)")):
        with pytest.raises(ConfigError) as exc:
            load_cog_yaml(write(tmp_path, f"concurrency:\n  max: {bad}\n"))
        assert msg in str(exc.value) and exc.value.line == 2


def test_environment(tmp_path):
    config = load_cog_yaml(write(tmp_path, "environment:\n  - A=1\n  - B=x=y\n"))
    assert config.environment == {"A": "1", "B": "x=y"}
    with pytest.raises(ConfigError) as exc:
        load_cog_yaml(write(tmp_path, "environment:\n  - A=1\n  - NOEQUALS\n"))
    assert "environment variable 'NOEQUALS' is not in the KEY=VALUE format" in str(exc.value)
    assert exc.value.line == 3
    with pytest.raises(ConfigError, match="environment variable 'A' is already defined"):
        load_cog_yaml(write(tmp_path, "environment:\n  - A=1\n  - A=2\n"))


def test_top_level_must_be_mapping_and_unknown_keys_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_cog_yaml(write(tmp_path, "- a\n"))
    path = write(tmp_path, "build:\n  gpu: false\npredictor: predict.py:Runner\n")
    with pytest.raises(ConfigError) as exc:
        load_cog_yaml(path)
    assert str(exc.value).startswith(f"{path}, line 3: unknown top-level key 'predictor' (did you mean 'predict'?)")
    assert exc.value.line == 3
    with pytest.raises(ConfigError, match="unknown top-level key 'surprise'; Cog refuses it"):
        load_cog_yaml(write(tmp_path, "surprise: 1\n"))
    assert load_cog_yaml(write(tmp_path, "")).predict is None


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_cog_yaml(str(tmp_path / "nope.yaml"))
    assert "file not found" in str(exc.value)


def test_find_cog_yaml(tmp_path):
    assert find_cog_yaml(str(tmp_path)) is None
    path = write(tmp_path, "run: run.py:Runner\n")
    assert find_cog_yaml(str(tmp_path)) == path
