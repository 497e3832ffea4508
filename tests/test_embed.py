"""The embedding API (minicog.Model, minicog.serve_in_thread) over real worker processes."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import socket

import pytest

import minicog
from minicog import embed, errors
from minicog.settings import Settings
from support import predictor, wait_until

TIMEOUT = 60


@pytest.fixture(autouse=True)
def worker_tmpdir(tmp_path_factory, monkeypatch):
    """Each test's workers get a TMPDIR of their own under pytest's temporary folder.

    A Model's workers inherit this process's environment, and the fixture models that
    return files (cli_files.py, cli_train.py) write them with tempfile and never remove
    them, as a real model may: they must not pile up in /tmp.  The folder is beside the
    test's tmp_path, not in it (test_prediction_temp_files_removed_when_each_prediction_ends
    looks at everything in tmp_path).
    """
    folder = tmp_path_factory.mktemp("worker-tmp")
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def textgen():
    with minicog.Model() as model:  # no reference: the embedded default model
        yield model


def test_lazy_exports_are_the_embedding_api():
    assert minicog.Model is embed.Model
    assert minicog.serve_in_thread is embed.serve_in_thread


def test_predict_returns_the_output(textgen):
    tokens = textgen.predict(prompt="The river", seed=11, max_tokens=8)
    # An iterator output comes back as the list of its items.
    assert isinstance(tokens, list) and len(tokens) == 8
    assert textgen.predict(prompt="The river", seed=11, max_tokens=8) == tokens


def test_schema_and_streaming_flag(textgen):
    assert textgen.schema["openapi"] == "3.0.2"
    assert "prompt" in textgen.schema["components"]["schemas"]["Input"]["properties"]
    assert textgen.streaming is True


def test_stream_yields_items_as_they_arrive(textgen):
    seen = []
    for token in textgen.stream(prompt="The", seed=3, max_tokens=5, unit="char"):
        seen.append(token)
    assert len(seen) == 5 and all(len(t) == 1 for t in seen)


def test_invalid_input_raises_with_every_problem(textgen):
    with pytest.raises(errors.InputValidationError) as info:
        textgen.predict(max_tokens=0, unit="byte")
    names = sorted(d["loc"][2] for d in info.value.detail)
    assert names == ["max_tokens", "unit"]


def test_unknown_keyword_is_an_input_validation_error(textgen):
    # A typo must not vanish: predict/stream/submit refuse it before anything runs,
    # as Cog's CLI refuses an unknown -i (validateKnownInputs).
    for call in (textgen.predict, textgen.submit, textgen.stream):
        with pytest.raises(errors.InputValidationError) as info:
            call(promt="The", max_tokens=2)
        assert [d["loc"] for d in info.value.detail] == [["body", "input", "promt"]]
        assert "valid inputs are: " in info.value.detail[0]["msg"] and "prompt" in info.value.detail[0]["msg"]
    # submit_input (a dict, for names that are not identifiers) keeps the HTTP API's rule.
    assert textgen.submit_input({"prompt": "The", "max_tokens": 2, "bogus": 1}).result(TIMEOUT)


def test_submit_returns_a_handle_with_logs(textgen):
    handle = textgen.submit(seed=5, max_tokens=3)
    assert len(handle.result(TIMEOUT)) == 3
    assert handle.status == "succeeded"
    assert "Using seed: 5" in handle.logs


def test_failed_prediction_raises_with_logs():
    with minicog.Model(predictor("cli_fail.py")) as model:
        with pytest.raises(errors.PredictionError) as info:
            model.predict(why="for the test")
    assert not isinstance(info.value, errors.PredictionCanceled)
    assert "the model failed for the test" in str(info.value)
    assert "cli_fail: about to fail" in info.value.logs


def test_setup_failure_raises_load_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from cog import BaseRunner\nclass Runner(BaseRunner):\n"
                   "    def setup(self):\n        print('bad: loading')\n        raise RuntimeError('no weights here')\n"
                   "    def run(self) -> str:\n        return 'x'\n")
    with pytest.raises(errors.LoadError) as info:
        minicog.Model(str(bad)).start()
    assert "no weights here" in str(info.value) or "no weights here" in info.value.logs
    assert "bad: loading" in info.value.logs


def test_cancel_and_early_close_of_a_stream(tmp_path):
    marker = tmp_path / "canceled"
    with minicog.Model(predictor("cli_stream.py")) as model:
        handle = model.submit(count=1000, pause=0.1, marker=str(marker))
        wait_until(lambda: "token 1" in handle.logs, timeout=TIMEOUT, message="the prediction to run")
        assert handle.cancel() is True
        with pytest.raises(errors.PredictionCanceled):
            handle.result(TIMEOUT)
        assert marker.read_text() == "canceled"

        # Closing a stream early cancels its prediction too; the model stays usable.
        marker.unlink()
        stream = model.stream(count=1000, pause=0.1, marker=str(marker))
        assert next(stream) == "tok0 "
        stream.close()
        wait_until(marker.exists, timeout=TIMEOUT, message="the canceled marker")
        assert model.predict(count=2) == ["tok0 ", "tok1 "]


def test_file_outputs_are_paths_kept_until_close(tmp_path):
    model = minicog.Model(predictor("cli_files.py") + ":Several")
    with model:
        paths = model.predict(count=2)
        assert all(isinstance(p, pathlib.Path) for p in paths)
        assert [p.read_text() for p in paths] == ["file 0", "file 1"]
    assert not any(p.exists() for p in paths)
    # With output_dir the files stay.
    with minicog.Model(predictor("cli_files.py") + ":Single", output_dir=str(tmp_path)) as model:
        path = model.predict(text="kept")
    assert path.read_text() == "kept" and tmp_path in path.parents


def test_prediction_temp_files_removed_when_each_prediction_ends(tmp_path):
    settings = Settings.from_env(tmp_dir=str(tmp_path))
    with minicog.Model(predictor("cli_files.py") + ":Several", settings=settings) as model:
        paths = model.predict(count=2)
        roots = [p for p in tmp_path.iterdir() if not p.name.startswith("minicog-outputs-")]
        leftovers = [os.path.join(d, f) for root in roots for d, _, fs in os.walk(root) for f in fs]
        # The worker's copies are gone while the model still runs; ours are kept.
        assert leftovers == []
        assert all(p.exists() for p in paths)


def test_file_inputs_from_local_paths(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("read by the worker")
    with minicog.Model(predictor("cli_types.py")) as model:
        out = model.predict(text="t", doc=doc)
    assert out["doc"] == "read by the worker"


def test_train_mode():
    with minicog.Model(predictor("cli_train.py") + ":Trainer", mode="train") as model:
        out = model.predict(steps=4)
    assert out["steps"] == 4 and out["weights"].startswith("data:")


def _get(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_serve_in_thread_serves_and_stops():
    with minicog.serve_in_thread(predictor("cli_text.py"), wait_ready=TIMEOUT) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
        status, health = _get(server.port, "/health-check")
        assert status == 200 and health["status"] == "READY"
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        conn.request("POST", "/predictions", body=json.dumps({"input": {"name": "thread"}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and body["output"] == "hello thread"
        # The HTTP API keeps Cog's rule: an unknown key is dropped (with a warning), not refused.
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        conn.request("POST", "/predictions", body=json.dumps({"input": {"name": "x", "nmae": "typo"}}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and body["output"] == "hello x"
        port = server.port
    # After stop() the port no longer accepts connections.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
