"""The Listener protocol (minicog.engine.listener): the calls a run's owner receives."""

import inspect

from minicog.embed import _Listener
from minicog.engine import Listener
from minicog.server.prediction import Prediction
from engine_support import Recorder

_METHODS = ("started", "log", "output", "file_output", "metric", "succeeded", "failed", "canceled")


def test_the_protocol_names_every_call_with_its_parameters():
    for name in _METHODS:
        assert callable(getattr(Listener, name)), name
    params = {name: list(inspect.signature(getattr(Listener, name)).parameters)[1:] for name in _METHODS}
    assert params == {"started": [], "log": ["source", "data"], "output": ["index", "value"],
                      "file_output": ["index", "path", "mime"], "metric": ["name", "value", "mode"],
                      "succeeded": ["is_stream"], "failed": ["error"], "canceled": []}


def test_every_listener_in_minicog_implements_it():
    """The HTTP record, the embedding API's listener and the tests' recorder all match it."""
    for cls in (Prediction, _Listener, Recorder):
        for name in _METHODS:
            theirs = list(inspect.signature(getattr(cls, name)).parameters)[1:]
            ours = list(inspect.signature(getattr(Listener, name)).parameters)[1:]
            assert len(theirs) == len(ours), f"{cls.__name__}.{name}{theirs} vs {ours}"
