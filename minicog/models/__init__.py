"""The embedded default model: what ``python -m minicog serve`` runs when nothing else is named.

A fresh clone has no model of its own, yet a new user should see streaming,
input validation and the schema at work with nothing installed.  So minicog
ships one small model: :mod:`textgen` (``textgen.py`` in this folder), a
character-level n-gram text generator written exactly as a Cog model is
written (``from cog import BaseRunner, Input, ConcatenateIterator,
streaming``).  It is loaded like any user predictor, by file reference, in the
worker process; the parent never imports it.

It "trains" in ``setup()`` by counting character n-grams of
``corpus.txt``, a few pages of prose written for minicog and dedicated to the
public domain (nothing is downloaded; the text ships in the package), and then
continues a prompt by sampling one character at a time.  The output is
grammatical-looking nonsense, which is the point: it is instant, deterministic
with a seed, and streams one token at a time.

:data:`DEFAULT_REF` is the reference :func:`minicog.loader.resolve_ref` falls
back to when no predictor is named on the command line, in ``cog.yaml`` or in
``COG_PREDICT_TYPE_STUB``.
"""

from __future__ import annotations

import os

__all__ = ["DEFAULT_REF", "MODELS_DIR", "CORPUS_PATH"]

#: This folder.
MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
#: The text the default model learns from.
CORPUS_PATH = os.path.join(MODELS_DIR, "corpus.txt")
#: Predictor reference of the embedded default model (``path/textgen.py:Runner``).
DEFAULT_REF = os.path.join(MODELS_DIR, "textgen.py") + ":Runner"
