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


def test_a_single_output_reaches_the_listener_after_the_logs_and_before_the_end():
    # The worker sends a sync prediction's single inline output inside its done message;
    # a listener must see the same calls, in the same order, as with a separate message.
    from engine_support import predict, running

    with running("basic_echo.py", max_inline_ipc_bytes=4096) as orch:
        small = predict(orch, "small", {"text": "abc", "metric": 2})
        big = predict(orch, "big", {"text": "z" * 10000})  # too big to inline: spilled as before
    for rec, value in ((small, "ABC"), (big, "Z" * 10000)):
        kinds = [e[0] for e in rec.events]
        assert kinds[-2:] == ["output", "succeeded"], kinds
        assert rec.outputs() == [value] and rec.terminal == ("succeeded", False)
        assert "got " in rec.logs("stdout") and "to stderr" in rec.logs("stderr")
        assert all(k in ("started", "log", "metric") for k in kinds[:-2]), kinds
    assert [e for e in small.events if e[0] == "metric"]  # metrics kept their place too
