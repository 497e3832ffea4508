"""Scope / MetricRecorder: Cog's name rules, modes, type invariant; scope lookup order."""

import asyncio
import contextvars
import threading

import pytest

from minicog.sdk import scope as scope_mod
from minicog.sdk.scope import MetricRecorder, Scope, current_scope, set_sync_scope, use_scope


def recorder():
    events = []
    return MetricRecorder(lambda *a: events.append(a)), events


@pytest.mark.parametrize("name", ["temperature", "token_count", "TTFT", "T2I_latency", "x",
                                  "timing.preprocess", "a.b.c.d", "foo.bar_baz", "cognitive", "a" * 128])
def test_valid_names(name):
    rec, events = recorder()
    rec.record(name, 1)
    assert events == [(name, 1, "replace")]


@pytest.mark.parametrize("name,message", [
    ("", "metric name must not be empty"),
    ("a" * 129, "metric name must be 128 characters or fewer (got 129 characters)"),
    ("a.b.c.d.e", "metric name must have at most 4 dot-separated segments (got 5)"),
    (".foo", "metric name must not start with a dot"),
    ("foo.", "metric name must not end with a dot"),
    ("foo..bar", "metric name must not contain empty segments (consecutive dots)"),
    ("_foo", "metric name segment '_foo' must start with a letter"),
    ("123bar", "metric name segment '123bar' must start with a letter"),
    ("foo_", "metric name segment 'foo_' must end with a letter or digit"),
    ("foo_.bar", "metric name segment 'foo_' must end with a letter or digit"),
    ("foo__bar", "metric name segment 'foo__bar' must not contain consecutive underscores"),
    ("foo bar", "metric name segment 'foo bar' contains invalid character ' '"),
    ("foo-bar", "metric name segment 'foo-bar' contains invalid character '-'"),
    ("fooé", "metric name segment 'fooé' contains invalid character 'é'"),
    ("predict_time", "'predict_time' is reserved by the runtime"),
    ("cog.anything", "the 'cog.' prefix is reserved for system metrics"),
])
def test_invalid_names_with_cogs_messages(name, message):
    rec, events = recorder()
    with pytest.raises(ValueError) as exc:
        rec.record(name, 1)
    assert str(exc.value) == message
    assert events == []


def test_delete_skips_reserved_checks_but_not_structure():
    rec, events = recorder()
    rec.delete("predict_time")
    rec.delete("cog.x")
    with pytest.raises(ValueError, match="must start with a letter"):
        rec.delete("_foo")
    assert events == [("predict_time", None, "replace"), ("cog.x", None, "replace")]


def test_modes_are_normalised():
    rec, events = recorder()
    rec.record("a", 1)
    rec.record("a", 2, mode="replace")
    rec.record("b", 1, mode="incr")
    rec.record("c", 3, mode="increment")
    rec.record("d", "x", mode="append")
    assert [e[2] for e in events] == ["replace", "replace", "increment", "increment", "append"]


def test_invalid_mode_message_even_outside_prediction():
    rec, _ = recorder()
    with pytest.raises(TypeError) as exc:
        rec.record("a", 1, mode="sum")
    assert str(exc.value) == "Invalid metric mode: 'sum'. Expected 'replace', 'incr', or 'append'."
    with pytest.raises(TypeError, match="Invalid metric mode: 'sum'"):
        MetricRecorder().record("a", 1, mode="sum")


@pytest.mark.parametrize("value,tname", [((1, 2), "tuple"), (b"x", "bytes"), ({1}, "set")])
def test_unsupported_value_types(value, tname):
    rec, _ = recorder()
    with pytest.raises(TypeError) as exc:
        rec.record("a", value)
    assert str(exc.value) == f"Unsupported metric value type: {tname}. Expected bool, int, float, str, list, or dict."


@pytest.mark.parametrize("mode", [None, "replace", "incr", "append"])
def test_recording_none_deletes_the_key(mode):
    # Cog's docs: "Setting a metric to None deletes it" (also with a mode).
    rec, events = recorder()
    rec.record("k", 1)
    rec.record("k", None, mode=mode)
    rec.record("k", "now a string")  # the type lock went with the key
    assert events == [("k", 1, "replace"), ("k", None, "replace"), ("k", "now a string", "replace")]
    with pytest.raises(TypeError, match="Invalid metric mode"):
        rec.record("k", None, mode="sum")
    with pytest.raises(ValueError):
        rec.record("bad name", None)


def test_type_invariant_and_delete_resets_it():
    rec, events = recorder()
    rec.record("k", 1)
    with pytest.raises(TypeError) as exc:
        rec.record("k", "one")
    assert str(exc.value) == "Metric 'k' has type int, cannot set to str without deleting first"
    with pytest.raises(TypeError) as exc:
        rec.record("k", True)  # bool is not int here
    assert str(exc.value) == "Metric 'k' has type int, cannot set to bool without deleting first"
    del rec["k"]
    rec["k"] = "one"
    assert events == [("k", 1, "replace"), ("k", None, "replace"), ("k", "one", "replace")]


def test_increment_requires_number():
    rec, _ = recorder()
    with pytest.raises(TypeError) as exc:
        rec.record("s", "x", mode="incr")
    assert str(exc.value) == "Increment mode requires int or float, got str"
    with pytest.raises(TypeError, match="got bool"):
        rec.record("b", True, mode="incr")


def test_setitem_none_deletes():
    rec, events = recorder()
    rec["a"] = [1, 2]
    rec["a"] = None
    assert events == [("a", [1, 2], "replace"), ("a", None, "replace")]


def test_emitted_value_is_a_json_copy():
    rec, events = recorder()
    value = {"x": [1, {"y": 2.5}]}
    rec.record("d", value)
    value["x"].append(3)
    assert events == [("d", {"x": [1, {"y": 2.5}]}, "replace")]
    with pytest.raises(TypeError, match="Cannot convert tuple to JSON metric value"):
        rec.record("e", [(1, 2)])


def test_noop_recorder_and_close():
    noop = MetricRecorder()
    noop.record("predict_time", object())  # nothing validated outside a prediction, as in coglet
    noop.delete("")
    assert repr(noop) == "MetricRecorder(inactive)"
    rec, events = recorder()
    rec.record("a", 1)
    assert repr(rec) == "MetricRecorder(keys=1)"
    rec.close()
    rec.record("a", 2)
    assert events == [("a", 1, "replace")]


def test_scope_context_and_record_metric():
    events = []
    s = Scope({"user": "u1"}, lambda *a: events.append(a))
    assert s.context == {"user": "u1"}
    s.record_metric("n", 1)
    s.metrics.record("l", 1, mode="append")
    assert events == [("n", 1, "replace"), ("l", 1, "append")]
    assert repr(s) == "Scope(MetricRecorder(keys=2))"


def test_lookup_order_contextvar_then_sync_then_noop():
    a, b = Scope({"id": "a"}), Scope({"id": "b"})
    assert current_scope().context == {}
    set_sync_scope(b)
    try:
        assert current_scope() is b
        seen = []
        t = threading.Thread(target=lambda: seen.append(current_scope()))
        t.start(); t.join(5)
        assert seen == [b]  # threads the prediction starts see the sync scope
        with use_scope(a):
            assert current_scope() is a
        assert current_scope() is b
    finally:
        set_sync_scope(None)
    assert current_scope() not in (a, b)


def test_use_scope_isolates_concurrent_tasks():
    async def one(scope, out):
        with use_scope(scope):
            await asyncio.sleep(0)
            out.append((scope.context["id"], current_scope().context["id"]))

    async def main():
        out = []
        await asyncio.gather(*(one(Scope({"id": str(i)}), out) for i in range(5)))
        return out

    out = asyncio.run(main())
    assert sorted(out) == [(str(i), str(i)) for i in range(5)]


def test_contextvar_name_matches_coglet():
    assert scope_mod._SCOPE.name == "_coglet_metric_scope"
    assert isinstance(scope_mod._SCOPE, contextvars.ContextVar)
