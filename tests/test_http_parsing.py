"""The pure parsing rules of the HTTP front-end (Cog's body rules, RFC 7240 Prefer, Accept, ids)."""

import pytest

from minicog.errors import RequestError, UnsupportedMediaType
from minicog.server.http import (BodyShapeError, check_id, parse_prediction_request, parse_prefer,
                                 wants_event_stream)
from minicog.settings import Settings


def test_no_content_type_ignores_body():
    req = parse_prediction_request(None, b"garbage")
    assert req.input == {} and req.id is None and req.context == {} and req.webhook is None


@pytest.mark.parametrize("ct", ["application/json", "application/json; charset=utf-8", "application/merge+json",
                                "Application/JSON"])
def test_json_content_types_accepted(ct):
    assert parse_prediction_request(ct, b'{"input": {"a": 1}}').input == {"a": 1}


def test_wrong_content_type_is_415_with_cogs_text():
    with pytest.raises(UnsupportedMediaType) as info:
        parse_prediction_request("application/x-www-form-urlencoded", b"a=1")
    assert info.value.http_status == 415
    assert str(info.value) == "Expected request with `Content-Type: application/json`"


@pytest.mark.parametrize("body,fragment", [
    (b"{1:2}", "Failed to parse the request body as JSON: "),
    (b"", "EOF while parsing a value at line 1 column 1"),
    (b'{"input": NaN}', "NaN is not valid JSON"),
    (b"\xff", "Failed to parse the request body as JSON"),
    (b'{"input": {"x": 1e400}}', "number out of range: 1e400"),
    (b'{"input": {"x": -1e400}}', "number out of range: -1e400"),
    pytest.param(b'{"input": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply", id="deeply-nested"),
])
def test_malformed_json_is_400(body, fragment):
    with pytest.raises(RequestError) as info:
        parse_prediction_request("application/json", body)
    assert info.value.http_status == 400 and fragment in str(info.value)


@pytest.mark.parametrize("body,message", [
    (b"null", "invalid type: null, expected struct PredictionRequest"),
    (b"[1]", "invalid type: sequence, expected struct PredictionRequest"),
    (b'{"id": 5}', "id: invalid type: integer `5`, expected a string"),
    (b'{"context": {"a": 1}}', "context.a: invalid type: integer `1`, expected a string"),
    (b'{"webhook": true}', "webhook: invalid type: boolean `true`, expected a string"),
    (b'{"webhook_events_filter": ["bogus"]}',
     "webhook_events_filter[0]: unknown variant `bogus`, expected one of `start`, `output`, `logs`, `completed`"),
])
def test_wrong_shapes_are_422(body, message):
    with pytest.raises(BodyShapeError) as info:
        parse_prediction_request("application/json", body)
    assert info.value.http_status == 422
    assert str(info.value) == "Failed to deserialize the JSON body into the target type: " + message


def test_fields_and_defaults():
    req = parse_prediction_request("application/json", b'{"id":"x1","input":null,"context":{"k":"v"},'
                                   b'"webhook":"http://h/w","webhook_events_filter":["completed"],"junk":1}')
    assert (req.id, req.input, req.context, req.webhook, req.events_filter) == \
        ("x1", {}, {"k": "v"}, "http://h/w", ["completed"])


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "a\x00", "x" * 300])
def test_bad_ids_are_400(bad):
    with pytest.raises(RequestError) as info:
        check_id(bad, Settings())
    assert info.value.http_status == 400


def test_prefer_rfc7240():
    assert "respond-async" in parse_prefer(["respond-async"])
    p = parse_prefer(["respond-async, wait=5"])
    assert p == {"respond-async": None, "wait": "5"}
    assert "respond-async" in parse_prefer(["Respond-Async ; x=1"])
    assert "respond-async" in parse_prefer(["wait=10", "respond-async"])
    assert parse_prefer(['foo="a,b", return=minimal']) == {"foo": "a,b", "return": "minimal"}
    assert "respond-async" not in parse_prefer(["respond-asyncx"])


def test_accept_event_stream():
    assert wants_event_stream(["text/event-stream"])
    assert wants_event_stream(["application/json, text/event-stream;q=0.9"])
    assert not wants_event_stream(["application/json", "*/*"])
