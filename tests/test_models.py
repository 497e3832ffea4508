"""The embedded default model (minicog/models/textgen.py), loaded as the worker loads it.

These tests run the model in-process through minicog's loader (fast); the CLI
and embedding tests run it in a real worker.
"""

from __future__ import annotations

import inspect
import os
import types

import pytest

from minicog import models
from minicog.loader import load_predictor, resolve_ref
from minicog.sdk.inputs import FieldInfo


@pytest.fixture(scope="module")
def loaded():
    lp = load_predictor(models.DEFAULT_REF)
    lp.setup()
    return lp


def defaults(fn) -> dict:
    """The run() defaults, as the worker would fill them in."""
    out = {}
    for name, param in inspect.signature(fn).parameters.items():
        info = param.default
        assert isinstance(info, FieldInfo), name
        out[name] = info.default
    return out


def run(lp, **inputs) -> list:
    args = defaults(lp.fn)
    args.update(inputs)
    result = lp.fn(**args)
    assert isinstance(result, types.GeneratorType), "the model must stream (a generator)"
    return list(result)


def test_default_ref_points_at_shipped_files():
    path, _, name = models.DEFAULT_REF.rpartition(":")
    assert name == "Runner"
    assert os.path.isfile(path)
    assert os.path.isfile(models.CORPUS_PATH)
    assert resolve_ref(None, mode="predict", cwd=os.path.dirname(path), environ={}) == models.DEFAULT_REF


def test_loads_as_a_streaming_runner(loaded):
    assert loaded.method_name == "run"
    assert loaded.streaming
    assert loaded.is_generator


def test_setup_logs_what_it_learned(capsys):
    lp = load_predictor(models.DEFAULT_REF)
    lp.setup()
    assert "textgen: learned" in capsys.readouterr().out


def test_inputs_carry_constraints(loaded):
    params = {n: p.default for n, p in inspect.signature(loaded.fn).parameters.items()}
    assert params["max_tokens"].ge == 1 and params["max_tokens"].le == 5000
    assert params["temperature"].ge == 0.0 and params["temperature"].le == 3.0
    assert params["unit"].choices == ["word", "char"]
    assert params["order"].choices == list(range(1, 9))
    assert params["prompt"].max_length == 1000
    # The "leave blank to randomize" idiom: optional, default None.
    assert params["seed"].default is None and not params["seed"].required


def test_same_seed_same_text_and_different_seeds_differ(loaded):
    a = run(loaded, seed=42, max_tokens=40)
    b = run(loaded, seed=42, max_tokens=40)
    c = run(loaded, seed=43, max_tokens=40)
    assert a == b
    assert a != c


def test_seed_left_blank_is_drawn_and_logged(loaded, capsys):
    tokens = run(loaded, max_tokens=5)
    assert len(tokens) == 5
    out = capsys.readouterr().out
    seed = int(out.split("Using seed:")[1].split()[0])
    # The logged seed reproduces the run.
    assert run(loaded, seed=seed, max_tokens=5) == tokens


def test_token_units_and_count(loaded):
    chars = run(loaded, seed=1, unit="char", max_tokens=30)
    assert len(chars) == 30 and all(len(c) == 1 for c in chars)
    words = run(loaded, seed=1, unit="word", max_tokens=12)
    assert len(words) == 12
    # Every word token after the first starts with the whitespace that separates it.
    assert all(w[0].isspace() and w.strip() for w in words[1:])


def test_temperature_zero_ignores_the_seed(loaded):
    assert run(loaded, seed=1, temperature=0.0, max_tokens=20) == run(loaded, seed=2, temperature=0.0, max_tokens=20)


@pytest.mark.parametrize("order", [3, 8])
def test_every_character_follows_a_context_seen_in_the_text(loaded, order):
    # Each generated character, with the `order` characters before it, occurs in the text.
    prompt = "one hundred and twelve "
    text = prompt + "".join(run(loaded, prompt=prompt, order=order, seed=9, unit="char", max_tokens=200))
    with open(models.CORPUS_PATH, encoding="utf-8") as f:
        corpus = f.read()
    windows = [text[i - order:i + 1] for i in range(len(prompt), len(text))]
    assert all(w in corpus for w in windows), [w for w in windows if w not in corpus][:3]


def test_streams_lazily(loaded):
    args = defaults(loaded.fn)
    args.update(seed=5, max_tokens=3)
    gen = loaded.fn(**args)
    first = next(gen)
    assert isinstance(first, str) and first
    assert len([first, *gen]) == 3


def test_unknown_context_backs_off(loaded):
    # A prompt made of characters the text never uses still produces text.
    assert len(run(loaded, prompt="\u00e6\u00f8\u00e5\u00df", seed=3, unit="char", max_tokens=10)) == 10
