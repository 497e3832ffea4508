"""Big payloads, file inputs/outputs, streams and temporary-file cleanup."""

import base64
import os
import time

import pytest

from engine_support import Gate, Recorder, predict, running

MiB = 1024 * 1024


def test_yield_ten_thousand_items_in_order():
    with running("many_items.py") as orch:
        rec = predict(orch, "s", {"n": 10000}, timeout=60)
        assert rec.terminal == ("succeeded", True)
        assert rec.outputs() == list(range(10000))
        assert [e[1] for e in rec.events if e[0] == "output"] == list(range(10000))


@pytest.mark.slow
def test_async_generator_streams_item_by_item():
    with running("async_gen_stream.py") as orch:
        rec = Recorder()
        orch.submit("g", {"n": 3, "gap": 1.0}, rec)
        # The first item arrives long before the generator finishes.
        assert rec.first_output.wait(0.9)
        assert not rec.done.is_set()
        assert rec.wait(10) == ("succeeded", True)
        assert rec.outputs() == [0, 1, 2]


def test_four_async_predictions_at_once():
    with running("async_slots.py", max_concurrency=4) as orch:
        recs = [Recorder() for _ in range(4)]
        t0 = time.monotonic()
        for i, rec in enumerate(recs):
            orch.submit(f"a{i}", {"name": f"a{i}", "seconds": 1.0}, rec)
        assert orch.free_slots == 0
        for rec in recs:
            assert rec.wait(10) == ("succeeded", False)
        assert time.monotonic() - t0 < 4.0  # concurrent: four in a row take 4 s at least
        peaks = [e[2] for rec in recs for e in rec.events if e[0] == "metric" and e[1] == "peak"]
        assert max(peaks) == 4
        assert orch.free_slots == 4


@pytest.mark.slow
def test_fifty_megabyte_file_output_reaches_the_parent_as_a_path():
    with running("file_io.py") as orch:
        rec = predict(orch, "big", {"mode": "path", "size_mb": 50}, timeout=60)
        assert rec.terminal == ("succeeded", False)
        (_, index, path, mime) = next(e for e in rec.events if e[0] == "file_output")
        assert index == 0 and os.path.getsize(path) == 50 * MiB
        assert mime == "application/octet-stream"
        os.unlink(path)  # the model's own temp file, not minicog's


def test_iobase_output_is_written_in_the_prediction_folder_and_released():
    with running("file_io.py") as orch:
        rec = predict(orch, "io", {"mode": "iobase", "size_mb": 2})
        (_, _, path, _) = next(e for e in rec.events if e[0] == "file_output")
        assert path.startswith(orch._tmp_root) and os.path.getsize(path) == 2 * MiB
        folder = os.path.dirname(os.path.dirname(path))
        orch.release("io")
        assert not os.path.exists(folder)
        orch.release("io")  # idempotent


def test_big_input_and_output_spill_through_files():
    with running("file_io.py", max_inline_ipc_bytes=64 * 1024) as orch:
        blob = "b" * (1 * MiB)
        rec = predict(orch, "in", {"mode": "echo_len", "blob": blob})
        assert rec.outputs() == [len(blob)]
        rec = predict(orch, "out", {"mode": "big_json", "size_mb": 1})
        assert rec.outputs() == ["y" * MiB]
        # Spill files are deleted once read; only empty folders are left for release().
        for pid in ("in", "out"):
            (folder,) = [run.folder for run in orch.open_runs() if run.id == pid]  # one run per id
            leftovers = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
            assert leftovers == []
            orch.release(pid)


def test_data_url_input_is_downloaded_then_removed_when_the_prediction_ends():
    payload = base64.b64encode(b"hello input").decode()
    with running("file_io.py") as orch:
        rec = predict(orch, "d", {"mode": "input", "image": f"data:text/plain;base64,{payload}"})
        (out,) = rec.outputs()
        assert out["exists"] is True and out["data"] == "hello input"
        assert out["path"].startswith(orch._tmp_root)
        assert not os.path.exists(out["path"])  # removed at the end of the prediction


def test_bad_url_input_fails_with_input_validation_error():
    with running("file_io.py") as orch:
        rec = predict(orch, "bad", {"mode": "input", "image": "http://127.0.0.1:9/nothing.png"})
        kind, error = rec.terminal
        assert kind == "failed"
        assert error.startswith("Input validation error: image: ")


def test_unserialisable_output_fails_cleanly():
    with running("file_io.py") as orch:
        rec = predict(orch, "bad", {"mode": "bad_output"})
        kind, error = rec.terminal
        assert kind == "failed"
        assert error.startswith("Prediction failed: Failed to serialize output: TypeError: ")
        assert "object" in error
        assert rec.outputs() == []


def test_unreadable_output_spill_fails_the_prediction_and_the_slot_stays_healthy():
    import glob

    from support import wait_until

    with running("spilled_output.py", max_inline_ipc_bytes=1024) as orch:
        rec = Gate(hold="log", timeout=20)
        orch.submit("sp", {"size": 100000}, rec)
        pattern = os.path.join(orch._tmp_root, "*", "outputs", "spill_*.json")
        spill = wait_until(lambda: glob.glob(pattern), timeout=10, message="the output spill file")[0]
        os.unlink(spill)  # the parent will find it gone
        rec.release.set()
        kind, error = rec.wait(10)
        assert kind == "failed"
        assert error.startswith("Failed to read spilled output: ") and "No such file" in error
        assert rec.outputs() == []
        ok = predict(orch, "after", {"size": 5000})
        assert ok.terminal == ("succeeded", False) and ok.outputs() == ["y" * 5000]


def test_local_path_for_a_file_input_fails_even_without_parent_validation():
    # The orchestrator's submit() does not validate: the worker refuses the string
    # itself rather than handing predict() a path the client chose.
    with running("file_io.py") as orch:
        for value, reason in (("file:///etc/passwd", "'file' is not a valid URL scheme."),
                              ("/etc/passwd", "'/etc/passwd' is not a URL.")):
            rec = predict(orch, "local", {"mode": "input", "image": value})
            assert rec.terminal[0] == "failed"
            assert rec.terminal[1].startswith(f"Input validation error: image: {reason}"), rec.terminal


def test_takes_no_arguments_tells_a_bare_run_from_one_with_parameters():
    from minicog.worker.inputs import takes_no_arguments

    class Model:
        def run(self):
            return 1

        def predict(self, text: str = "x"):
            return text

    def anything(**kwargs):
        return kwargs

    assert takes_no_arguments(Model().run)
    assert not takes_no_arguments(Model().predict)
    assert not takes_no_arguments(anything)


def test_a_model_without_inputs_answers_every_request_the_same():
    # Its empty input skips the preparation step; what it returns must not depend on it.
    with running("page_no_inputs.py") as orch:
        for i in range(3):
            rec = predict(orch, f"bare-{i}", {})
            assert rec.terminal == ("succeeded", False)
            assert rec.outputs() == [{"answer": 42, "nested": {"ok": True, "items": [1, 2, 3]}}]


def test_an_input_plan_fills_defaults_drops_unknown_keys_and_wraps_secrets():
    # The worker works out once what preparing an input needs (InputPlan); with it,
    # prepare() must build the same kwargs as without one (when it makes its own).
    from minicog.schema import describe_inputs
    from minicog.sdk import Input, Secret
    from minicog.worker.inputs import InputPlan, prepare

    class Model:
        def predict(self, text: str, count: int = Input(default=2), tags: str = Input(default="a,b"),
                    token: Secret = Input(default=None)):
            return text

    fn = Model().predict
    specs = describe_inputs(fn)
    plan = InputPlan(fn, specs)
    assert plan.accepted == {"text", "count", "tags", "token"}
    assert [name for name, _ in plan.field_defaults] == ["count", "tags", "token"]
    assert [s.name for s in plan.special] == ["token"]
    limits = dict(timeout=1.0, max_bytes=1024, user_agent=None)
    for raw in ({"text": "a"}, {"text": "b", "count": 5, "token": "s3cret", "unknown": 1}):
        planned = prepare(fn, raw, specs, None, plan=plan, **limits).kwargs
        fresh = prepare(fn, raw, specs, None, **limits).kwargs
        assert planned.keys() == fresh.keys() and "unknown" not in planned
        assert planned["count"] == fresh["count"] and planned["tags"] == fresh["tags"] == "a,b"
    assert isinstance(planned["token"], Secret) and planned["token"].get_secret_value() == "s3cret"
    omitted = prepare(fn, {"text": "a"}, specs, None, plan=plan, **limits).kwargs
    assert omitted == {"text": "a", "count": 2, "tags": "a,b", "token": None}
    given = prepare(fn, {"text": "b", "count": 5, "unknown": 1}, specs, None, plan=plan, **limits).kwargs
    assert given == {"text": "b", "count": 5, "tags": "a,b", "token": None}


def test_an_input_plan_passes_every_key_to_a_function_with_kwargs():
    from minicog.worker.inputs import InputPlan, prepare

    def anything(**kwargs):
        return kwargs

    plan = InputPlan(anything, [])
    assert plan.accepts_any and not plan.special
    kwargs = prepare(anything, {"a": 1, "b": [2]}, [], None, timeout=1.0, max_bytes=1, user_agent=None,
                     plan=plan).kwargs
    assert kwargs == {"a": 1, "b": [2]}
