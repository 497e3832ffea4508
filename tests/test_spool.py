"""minicog.server.spool: which data: URI strings are decoded from a raw body, and how."""

import base64
import json
import os

import pytest

from minicog.server import spool
from minicog.server.http import parse_prediction_request
from minicog.server.outputs import DataURIInput, render_json
from minicog.settings import Settings

DATA = bytes(range(256)) * 600  # 153,600 bytes: base64 without padding
URI = "data:image/png;base64," + base64.b64encode(DATA).decode()


def spooled(body: dict, min_chars: int = 1000):
    raw = json.dumps(body).encode()
    reduced, found = spool.spool_data_uris(raw, min_chars=min_chars)
    return raw, reduced, found


def test_a_canonical_uri_becomes_a_file_and_renders_back_identically():
    raw, reduced, found = spooled({"input": {"a": URI, "b": "data:,small"}})
    try:
        assert len(found) == 1 and len(reduced) < 200
        doc = json.loads(reduced)
        assert spool.attach(doc["input"], found)
        value = doc["input"]["a"]
        assert isinstance(value, DataURIInput) and value == "data:image/png;base64,"
        with open(value.file.path, "rb") as f:
            assert f.read() == DATA
        assert value.file.path.endswith("file.png")
        assert render_json(doc).materialize() == json.dumps(json.loads(raw), separators=(",", ":")).encode()
        assert spool.input_files(doc["input"]) == [["a", None, value.file.path]]
    finally:
        spool.release(found.values())
    assert not os.path.exists(value.file.path)


@pytest.mark.parametrize("uri", [
    URI[:-1] + "=",                                     # non-zero trailing bits? no: a padding char in place of data
    URI[:-4],                                           # fine length, canonical: spooled (control case below)
    URI.replace("base64", "base64x"),                   # not base64
    "data:;base64," + URI.split(",", 1)[1],             # no media type
    URI[:5000] + "====" + URI[5000:],                   # padding in the middle
    URI[:5000] + "\n" + URI[5001:],                     # a line break (escaped in JSON)
    "data:image/png;base64," + base64.b64encode(DATA[:-1]).decode()[:-2] + "R=",  # trailing bits set
])
def test_anything_not_canonical_is_left_for_the_json_parser(uri):
    raw, reduced, found = spooled({"input": {"a": uri}})
    spool.release(found.values())
    canonical = uri == URI[:-4]
    assert bool(found) == canonical, uri[-8:]
    if not canonical:
        assert reduced == raw


def test_only_strings_that_start_a_json_string_are_taken():
    # Inside another string the quote is escaped: that text is not a data: URI value.
    raw, reduced, found = spooled({"input": {"note": 'say "' + URI + '"'}})
    assert not found and reduced == raw
    # A backslash right before the quote that is itself escaped: the quote is real.
    raw, reduced, found = spooled({"input": {"a": "x\\", "b": URI}})
    try:
        assert len(found) == 1
        doc = json.loads(reduced)
        assert doc["input"]["a"] == "x\\" and spool.attach(doc["input"], found)
    finally:
        spool.release(found.values())


def test_parse_falls_back_to_the_original_body_when_a_placeholder_is_misplaced(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    settings = Settings(data_uri_spool_chars=1000)
    for body in ({"input": {"nested": {"a": URI}}}, {"input": {URI: 1}}, {"input": {}, "webhook": URI},
                 {"input": {"deep": [[URI]]}}):
        req = parse_prediction_request("application/json", json.dumps(body).encode(), settings)
        assert req.spooled == [] and json.dumps(req.input) == json.dumps(body["input"])
    req = parse_prediction_request("application/json", json.dumps({"input": {"l": ["x", URI]}}).encode(), settings)
    assert len(req.spooled) == 1 and req.input["l"][0] == "x" and isinstance(req.input["l"][1], DataURIInput)
    spool.release(req.spooled)
    assert os.listdir(tmp_path) == []
    # Off, or below the threshold: never spooled.
    for s in (Settings(data_uri_spool_chars=0), Settings(data_uri_spool_chars=10 ** 7)):
        req = parse_prediction_request("application/json", json.dumps({"input": {"a": URI}}).encode(), s)
        assert req.spooled == [] and req.input["a"] == URI
