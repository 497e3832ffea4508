"""BaseRunner / BasePredictor, validate_runner_class, @concurrent, @streaming, runtime."""

import warnings

import pytest

from minicog.sdk import BasePredictor, BaseRunner, concurrent, current_scope, runtime, streaming
from minicog.sdk.predictor import validate_runner_class
from minicog.sdk.scope import Scope, use_scope


def test_base_setup_accepts_weights_and_does_nothing():
    import inspect
    r = BaseRunner()
    assert "weights" in inspect.signature(r.setup).parameters
    assert r.setup() is None and r.setup("w") is None


def test_run_not_implemented_message():
    with pytest.raises(NotImplementedError) as exc:
        BaseRunner().run()
    assert str(exc.value) == "run has not been implemented by parent class."


def test_run_bridges_to_user_predict():
    class P(BasePredictor):
        def predict(self, x: int) -> int:
            return x * 2

    assert P().run(x=4) == 8


def test_predict_bridges_to_run_with_deprecation_warning():
    class R(BaseRunner):
        def run(self, x: int) -> int:
            return x + 1

    with pytest.warns(DeprecationWarning, match=r"^R\.predict\(\) is deprecated; use run\(\) instead$"):
        assert R().predict(x=1) == 2


def test_validate_runner_class_messages():
    class Both(BaseRunner):
        def run(self): ...
        def predict(self): ...

    class Neither(BaseRunner):
        def setup(self): ...

    with pytest.raises(ValueError) as exc:
        validate_runner_class(Both, "Both")
    assert str(exc.value) == "Both must define either run() or predict(), not both"
    with pytest.raises(ValueError) as exc:
        validate_runner_class(Neither, "Neither")
    assert str(exc.value) == "run or predict method not found: Neither"


def test_validate_runner_class_warnings():
    class Old(BasePredictor):
        def predict(self): ...

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert validate_runner_class(Old, "Old") == "predict"
    messages = [str(w.message) for w in seen if w.category is DeprecationWarning]
    assert messages == ["Old.predict() is deprecated; use run() instead",
                        "BasePredictor is deprecated; use BaseRunner instead"]

    class New(BaseRunner):
        def run(self): ...

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert validate_runner_class(New, "New") == "run"
    assert seen == []


def test_mixins_after_baserunner_do_not_count():
    class Mixin:
        def run(self): ...

    class R(BaseRunner, Mixin):
        pass

    with pytest.raises(ValueError, match="run or predict method not found: R"):
        validate_runner_class(R, "R")


def test_inherited_user_run_counts():
    class Parent(BaseRunner):
        def run(self): return 1

    class Child(Parent):
        pass

    assert validate_runner_class(Child, "Child") == "run"


def test_record_metric_and_scope_delegate_to_current_scope():
    events = []
    r = BaseRunner()
    r.record_metric("outside", 1)  # no-op outside a prediction
    scope = Scope({"k": "v"}, lambda *a: events.append(a))
    with use_scope(scope):
        assert r.scope is scope
        r.record_metric("tokens", 3)
        r.record_metric("tokens", 2, mode="incr")
    assert events == [("tokens", 3, "replace"), ("tokens", 2, "increment")]
    assert r.scope is not scope


def test_concurrent_bare_and_called():
    @concurrent
    def a(): ...

    @concurrent(max=4)
    async def b(): ...

    @concurrent(max=3)
    async def c():
        yield 1

    @concurrent()
    def d(): ...

    assert a.__cog_concurrent_max__ == 1
    assert b.__cog_concurrent_max__ == 4
    assert c.__cog_concurrent_max__ == 3
    assert d.__cog_concurrent_max__ == 1


def test_concurrent_errors_with_cogs_messages():
    with pytest.raises(TypeError) as exc:
        concurrent(max="2")  # type: ignore[arg-type]
    assert str(exc.value) == "concurrent max must be an integer"
    with pytest.raises(TypeError) as exc:
        concurrent(max=True)
    assert str(exc.value) == "concurrent max must be an integer"
    with pytest.raises(ValueError) as exc:
        concurrent(max=0)
    assert str(exc.value) == "concurrent max must be at least 1"
    with pytest.raises(TypeError) as exc:
        @concurrent(max=2)
        def sync(): ...
    assert str(exc.value) == "concurrent max greater than 1 requires an async function"
    with pytest.raises(TypeError) as exc:
        concurrent(5)  # type: ignore[arg-type]
    assert str(exc.value) == "concurrent must be used as @concurrent or @concurrent(max=...)"


def test_concurrent_on_method_is_visible_on_bound_method():
    class R(BaseRunner):
        @concurrent(max=8)
        async def run(self): ...

    assert R().run.__cog_concurrent_max__ == 8


def test_streaming_marks_bare_and_called():
    @streaming
    def a(): return 1

    @streaming()
    def b(): return 2

    def c(): ...

    assert a.__cog_streaming__ is True and b.__cog_streaming__ is True
    assert a() == 1 and b() == 2  # not wrapped
    assert not hasattr(c, "__cog_streaming__")


def test_runtime_active_switch():
    assert runtime.active() is False
    try:
        runtime._set_active()
        assert runtime.active() is True
    finally:
        runtime._set_active(False)
    assert runtime.active() is False


def test_current_scope_outside_prediction_is_noop():
    scope = current_scope()
    scope.record_metric("x", 1)
    assert scope.context == {}
    assert repr(scope) == "Scope(MetricRecorder(inactive))"
