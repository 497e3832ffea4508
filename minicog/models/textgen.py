"""minicog's embedded default model: a character-level n-gram text generator.

This file is written exactly as a Cog model is written, and minicog loads it
the way it loads any user's ``predict.py``: by file reference, in the worker.
It shows the features a new user wants to see on a machine with nothing
installed:

* ``setup()`` that does real work (it counts the n-grams of ``corpus.txt``,
  a text that ships beside this file) and logs while doing it;
* inputs with constraints (``ge``/``le``, ``choices`` of ints and of strings,
  ``max_length``) so invalid input gets Cog's 422 answer;
* the ``seed: int = Input(default=None)`` idiom (optional; a random seed is
  drawn and logged when it is left out, so any run can be repeated);
* a ``@streaming`` ``ConcatenateIterator[str]`` output, one token at a time,
  with an optional ``delay`` to watch the stream (and to try cancelling).

How it generates: for every context length ``k`` from 0 to :data:`MAX_ORDER`
it counts which character follows each ``k``-character context in the text.
To continue a prompt it looks up the last ``order`` characters and samples the
next character in proportion to ``count ** (1 / temperature)`` (temperature 0
picks the most frequent character), backing off to shorter contexts when the
context never occurs in the text.  Sampling uses ``random.Random(seed)`` and
tables sorted once at set-up, so a seed gives the same text on every run and
every supported Python.
"""

from __future__ import annotations

import os
import random
import time
from typing import Dict, Iterator, List, Tuple

from cog import BaseRunner, ConcatenateIterator, Input, streaming

__all__ = ["Runner", "NGramModel", "MAX_ORDER"]

#: The longest context the model counts (the largest choice of ``order``).
MAX_ORDER = 8
_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.txt")


def _read_corpus() -> str:
    """The corpus, read through this module's loader so it is found inside a .pyz archive too."""
    get_data = getattr(globals().get("__loader__"), "get_data", None)
    if get_data is None:
        with open(_CORPUS, encoding="utf-8") as f:
            return f.read()
    return get_data(_CORPUS).decode("utf-8")


class NGramModel:
    """Character n-gram counts of one text, for contexts of length 0 to *max_order*."""

    def __init__(self, text: str, max_order: int = MAX_ORDER):
        if not text:
            raise ValueError("the n-gram model needs a non-empty text")
        self.max_order = max_order
        counts: List[Dict[str, Dict[str, int]]] = [{} for _ in range(max_order + 1)]
        for i, char in enumerate(text):
            for k in range(0, min(i, max_order) + 1):
                following = counts[k].setdefault(text[i - k:i], {})
                following[char] = following.get(char, 0) + 1
        # Sorted once, so sampling does not depend on dict insertion order.
        self.tables: List[Dict[str, Tuple[Tuple[str, ...], Tuple[int, ...]]]] = [
            {ctx: tuple(zip(*sorted(nxt.items()))) for ctx, nxt in table.items()}  # type: ignore[misc]
            for table in counts
        ]

    def next_char(self, context: str, order: int, temperature: float, rng: random.Random) -> str:
        """Sample the character after *context*, backing off to shorter contexts."""
        for k in range(min(order, len(context)), -1, -1):
            entry = self.tables[k].get(context[len(context) - k:] if k else "")
            if entry is not None:
                chars, counts = entry
                break
        if temperature <= 0:
            best = max(counts)
            return chars[counts.index(best)]
        weights = [c ** (1.0 / temperature) for c in counts]
        return rng.choices(chars, weights=weights, k=1)[0]

    def generate(self, prompt: str, *, order: int, temperature: float, rng: random.Random) -> Iterator[str]:
        """Endless characters continuing *prompt*."""
        context = prompt[-order:] if order else ""
        while True:
            char = self.next_char(context, order, temperature, rng)
            yield char
            context = (context + char)[-order:] if order else ""


def words(chars: Iterator[str]) -> Iterator[str]:
    """Group characters into word tokens: leading whitespace plus a run of non-space."""
    buf = ""
    for char in chars:
        if char.isspace() and buf.strip():
            yield buf
            buf = ""
        buf += char


class Runner(BaseRunner):
    def setup(self) -> None:
        started = time.monotonic()
        text = _read_corpus()
        self.model = NGramModel(text, MAX_ORDER)
        contexts = sum(len(t) for t in self.model.tables)
        print(f"textgen: learned {contexts} contexts of up to {MAX_ORDER} characters "
              f"from {len(text)} characters in {time.monotonic() - started:.3f}s")

    @streaming
    def run(
        self,
        prompt: str = Input(description="Text to continue", default="The light", max_length=1000),
        max_tokens: int = Input(description="Number of tokens to generate", default=60, ge=1, le=5000),
        unit: str = Input(description="What one token is: a word (with its leading space) or a character",
                          default="word", choices=["word", "char"]),
        order: int = Input(description="Characters of context the model looks at; more copies the text more closely",
                           default=5, choices=[1, 2, 3, 4, 5, 6, 7, 8]),
        temperature: float = Input(description="Randomness: 0 always picks the likeliest character, higher is wilder",
                                   default=0.8, ge=0.0, le=3.0),
        seed: int = Input(description="Random seed. Leave blank to randomize the seed", default=None),
        delay: float = Input(description="Seconds to pause after each token, to watch the stream",
                             default=0.0, ge=0.0, le=5.0),
    ) -> ConcatenateIterator[str]:
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "big")
        print(f"Using seed: {seed}")
        rng = random.Random(seed)
        chars = self.model.generate(prompt, order=order, temperature=temperature, rng=rng)
        tokens = chars if unit == "char" else words(chars)
        for n, token in enumerate(tokens, 1):
            yield token
            if n >= max_tokens:
                break
            if delay:
                time.sleep(delay)
