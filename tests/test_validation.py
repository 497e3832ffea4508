"""Tests for minicog.validation: Cog's 422 detail entries, minicog's nullable rule, speed."""

from __future__ import annotations

import copy
import logging
import time

import pytest

from minicog.validation import REDACTED, Validator, ValidationResult, redact_input, validate_input


def doc_with(properties: dict, required=(), extra_components=None, component="Input") -> dict:
    schemas = {component: {"title": component, "type": "object", "properties": properties, "required": list(required)}}
    schemas.update(extra_components or {})
    return {"openapi": "3.0.2", "components": {"schemas": schemas}}


def entry(field, msg, typ="value_error"):
    return {"loc": ["body", "input", field], "msg": msg, "type": typ}


# The complete example of cog-behaviour.md section 9, as minicog builds it (seed nullable).
EXAMPLE = {
    "components": {"schemas": {
        "Input": {"properties": {
            "prompt": {"description": "Prompt text", "title": "Prompt", "type": "string", "x-order": 0},
            "steps": {"default": 20, "maximum": 100, "minimum": 1, "title": "Steps", "type": "integer", "x-order": 1},
            "scheduler": {"allOf": [{"$ref": "#/components/schemas/scheduler"}], "default": "ddim", "x-order": 2},
            "image": {"default": None, "description": "Init image", "format": "uri", "nullable": True, "title": "Image", "type": "string", "x-order": 3},
            "api_key": {"default": None, "format": "password", "nullable": True, "title": "Api Key", "type": "string", "writeOnly": True, "x-cog-secret": True, "x-order": 4},
            "seed": {"default": None, "nullable": True, "title": "Seed", "type": "integer", "x-order": 5}},
            "required": ["prompt"], "title": "Input", "type": "object"},
        "scheduler": {"description": "An enumeration.", "enum": ["ddim", "euler"], "title": "scheduler", "type": "string"},
    }},
}


def test_valid_input_passes_unchanged():
    value = {"prompt": "a cat", "steps": 30, "scheduler": "euler", "image": "http://x/y.png", "seed": 3}
    res = validate_input(EXAMPLE, value)
    assert isinstance(res, ValidationResult)
    assert res.ok and res.errors == [] and res.dropped == []
    assert res.value == value
    assert res.value is not value  # the caller's dict is not mutated


def test_type_errors_use_cogs_messages():
    doc = doc_with({"i": {"type": "integer"}, "n": {"type": "number"}, "s": {"type": "string"},
                    "b": {"type": "boolean"}, "o": {"type": "object"}, "a": {"type": "array"}})
    res = validate_input(doc, {"i": "3", "n": "1", "s": None, "b": 1, "o": [1], "a": {"k": "v"}})
    assert res.errors == [
        entry("i", '"3" is not of type "integer"'),
        entry("n", '"1" is not of type "number"'),
        entry("s", 'null is not of type "string"'),
        entry("b", '1 is not of type "boolean"'),
        entry("o", '[1] is not of type "object"'),
        entry("a", '{"k":"v"} is not of type "array"'),
    ]


def test_integer_number_and_bool_are_distinct():
    doc = doc_with({"i": {"type": "integer"}, "n": {"type": "number"}})
    assert validate_input(doc, {"i": 3, "n": 2}).ok            # an int is a number
    assert validate_input(doc, {"i": 3.0}).ok                  # 3.0 is an integer in JSON Schema
    assert validate_input(doc, {"i": 1.5}).errors == [entry("i", '1.5 is not of type "integer"')]
    # bool is a subclass of int in Python, but never a JSON number
    assert validate_input(doc, {"i": True, "n": False}).errors == [
        entry("i", 'true is not of type "integer"'), entry("n", 'false is not of type "number"')]


def test_numeric_bounds():
    doc = doc_with({"n": {"type": "integer", "minimum": 1, "maximum": 10}, "f": {"type": "number", "maximum": 0.5}})
    assert validate_input(doc, {"n": 11}).errors == [entry("n", "11 is greater than the maximum of 10")]
    assert validate_input(doc, {"n": 0}).errors == [entry("n", "0 is less than the minimum of 1")]
    assert validate_input(doc, {"n": 1, "f": 0.5}).ok  # bounds are inclusive
    assert validate_input(doc, {"f": 0.75}).errors == [entry("f", "0.75 is greater than the maximum of 0.5")]
    # a wrong type is reported once, not also as an out-of-range number
    assert validate_input(doc, {"n": "99"}).errors == [entry("n", '"99" is not of type "integer"')]


def test_string_lengths_count_characters_not_bytes():
    doc = doc_with({"s": {"type": "string", "minLength": 2, "maxLength": 4}, "one": {"type": "string", "minLength": 1}})
    assert validate_input(doc, {"s": "x"}).errors == [entry("s", '"x" is shorter than 2 characters')]
    assert validate_input(doc, {"s": "xxxxx"}).errors == [entry("s", '"xxxxx" is longer than 4 characters')]
    assert validate_input(doc, {"s": "ąąąą"}).ok  # 4 characters, 8 bytes
    assert validate_input(doc, {"one": ""}).errors == [entry("one", '"" is shorter than 1 character')]


def test_pattern_is_an_unanchored_search():
    doc = doc_with({"p": {"type": "string", "pattern": "^x"}, "q": {"type": "string", "pattern": "b"}})
    assert validate_input(doc, {"p": "yy"}).errors == [entry("p", '"yy" does not match "^x"')]
    assert validate_input(doc, {"p": "axb"}).errors == [entry("p", '"axb" does not match "^x"')]
    assert validate_input(doc, {"p": "xą", "q": "abc"}).ok  # "b" found mid-string


def test_enum_through_allof_ref_component():
    res = validate_input(EXAMPLE, {"prompt": "p", "scheduler": "blue"})
    assert res.errors == [entry("scheduler", '"blue" is not one of ["ddim","euler"]')]
    doc = doc_with({"c": {"allOf": [{"$ref": "#/components/schemas/c"}], "x-order": 0}},
                   extra_components={"c": {"title": "c", "description": "An enumeration.", "enum": [1, 2], "type": "integer"}})
    assert validate_input(doc, {"c": 2}).ok
    assert validate_input(doc, {"c": 2.0}).ok  # JSON equality: 2.0 == 2
    assert validate_input(doc, {"c": 3}).errors == [entry("c", "3 is not one of [1,2]")]
    # one value, two problems, in the validator's order
    assert validate_input(doc, {"c": "1"}).errors == [
        entry("c", '"1" is not one of [1,2]'), entry("c", '"1" is not of type "integer"')]
    bools = doc_with({"c": {"enum": [1]}})
    assert validate_input(bools, {"c": True}).errors == [entry("c", "true is not one of [1]")]


def test_anyof():
    doc = doc_with({"u": {"anyOf": [{"type": "integer"}, {"type": "string"}]}})
    assert validate_input(doc, {"u": 3}).ok
    assert validate_input(doc, {"u": "s"}).ok
    assert validate_input(doc, {"u": 1.5}).errors == [
        entry("u", "1.5 is not valid under any of the schemas listed in the 'anyOf' keyword")]


def test_nested_locations_for_items_and_objects():
    doc = doc_with({"l": {"type": "array", "items": {"type": "integer", "maximum": 5}},
                    "d": {"type": "object", "additionalProperties": {"type": "string"}}})
    res = validate_input(doc, {"l": [1, "x", 9], "d": {"a": "ok", "b": 2}})
    assert res.errors == [
        {"loc": ["body", "input", "l/1"], "msg": '"x" is not of type "integer"', "type": "value_error"},
        {"loc": ["body", "input", "l/2"], "msg": "9 is greater than the maximum of 5", "type": "value_error"},
        {"loc": ["body", "input", "d/b"], "msg": '2 is not of type "string"', "type": "value_error"},
    ]


def test_additional_properties_false_in_nested_object():
    doc = doc_with({"o": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
                          "additionalProperties": False}})
    res = validate_input(doc, {"o": {"b": 1}})
    assert res.errors == [
        entry("o", "Additional properties are not allowed ('b' was unexpected)"),
        entry("o", '"a" is a required property'),
    ]


def test_missing_required_fields_all_reported_after_value_errors():
    doc = doc_with({"a": {"type": "string"}, "b": {"type": "integer", "maximum": 1}, "c": {"type": "string"}},
                   required=["a", "b", "c"])
    res = validate_input(doc, {"b": 2})
    assert res.errors == [
        entry("b", "2 is greater than the maximum of 1"),
        entry("a", "Field required", "value_error.missing"),
        entry("c", "Field required", "value_error.missing"),
    ]


def test_unknown_keys_are_dropped_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="minicog.validation"):
        res = validate_input(EXAMPLE, {"prompt": "p", "junk": 1, "more": 2})
    assert res.ok
    assert res.value == {"prompt": "p"}
    assert res.dropped == ["junk", "more"]
    assert any("junk" in r.getMessage() and r.name == "minicog.validation" for r in caplog.records)


def test_non_object_input_is_one_entry_at_body_input():
    for bad, shown in (([1], "[1]"), ("x", '"x"'), (3, "3")):
        res = validate_input(EXAMPLE, bad)
        assert res.errors == [{"loc": ["body", "input"], "msg": f'{shown} is not of type "object"', "type": "value_error"}]


def test_explicit_null_accepted_for_nullable_inputs():
    # Better than coglet, which answers 422 `null is not of type "string"`.
    res = validate_input(EXAMPLE, {"prompt": "p", "image": None, "seed": None, "api_key": None})
    assert res.ok, res.errors
    assert res.value["image"] is None
    # ...but not for inputs that are not nullable
    assert validate_input(EXAMPLE, {"prompt": None}).errors == [entry("prompt", 'null is not of type "string"')]
    # nullable anyOf variants (Optional[int | str])
    doc = doc_with({"u": {"anyOf": [{"type": "integer", "nullable": True}, {"type": "string", "nullable": True}], "nullable": True}})
    assert validate_input(doc, {"u": None}).ok


def test_null_injected_only_for_nullable_optional_inputs_without_default():
    doc = doc_with({
        "opt": {"type": "string", "nullable": True},                    # injected
        "with_default": {"type": "string", "nullable": True, "default": "d"},  # Python default applies
        "plain": {"type": "string"},                                    # not nullable
        "req": {"type": "string", "nullable": True},                    # required
    }, required=["req"])
    res = validate_input(doc, {"req": "r"})
    assert res.value == {"req": "r", "opt": None}
    # nothing is injected when the input is invalid
    assert "opt" not in validate_input(doc, {}).value


def test_training_falls_back_to_input():
    assert validate_input(EXAMPLE, {}, component="TrainingInput").errors == [entry("prompt", "Field required", "value_error.missing")]
    train_doc = doc_with({"lr": {"type": "number"}}, required=["lr"], component="TrainingInput")
    assert validate_input(train_doc, {"lr": "x"}, component="TrainingInput").errors == [entry("lr", '"x" is not of type "number"')]


def test_no_input_component_means_no_validation():
    doc = {"components": {"schemas": {}}}
    res = validate_input(doc, {"anything": 1})
    assert res.ok and res.value == {"anything": 1} and res.dropped == []


def test_all_problems_reported_at_once():
    res = validate_input(EXAMPLE, {"steps": 1000, "scheduler": "x", "seed": "s", "junk": True})
    assert [e["loc"][2] for e in res.errors] == ["steps", "scheduler", "seed", "prompt"]
    assert res.dropped == ["junk"]


def test_compiled_validator_is_cached_per_document_and_fast():
    doc = copy.deepcopy(EXAMPLE)
    value = {"prompt": "p", "steps": 5, "scheduler": "ddim", "image": None}
    validate_input(doc, value)
    from minicog import validation
    assert validation._validator_for(doc, "Input") is validation._validator_for(doc, "Input")
    # A different document object with the same id-slot never reuses a stale entry.
    other = copy.deepcopy(EXAMPLE)
    assert validation._validator_for(other, "Input") is not validation._validator_for(doc, "Input")
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        validate_input(doc, value)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 200e-6, f"validate_input took {per_call * 1e6:.1f} µs per call"


def test_validator_class_matches_entry_point():
    v = Validator(EXAMPLE)
    assert v.validate({"prompt": 1}) == validate_input(EXAMPLE, {"prompt": 1})
    assert v.validate({"prompt": 1}).errors == [entry("prompt", '1 is not of type "string"')]


def test_errors_are_json_serializable():
    import json
    res = validate_input(EXAMPLE, {"steps": "x"})
    assert json.loads(json.dumps(res.errors)) == res.errors


def test_format_is_not_asserted_except_uri_for_file_inputs():
    assert validate_input(EXAMPLE, {"prompt": "p", "api_key": "anything"}).ok
    for good in ("https://example.com/x.png", "HTTP://example.com/x", "data:,hi"):
        assert validate_input(EXAMPLE, {"prompt": "p", "image": good}).ok, good
    res = validate_input(EXAMPLE, {"prompt": "p", "image": "not a uri"})
    assert res.errors == [{"loc": ["body", "input", "image"], "type": "value_error",
                           "msg": "'not a uri' is not a URL. 'data', 'http', or 'https' is supported."}]
    res = validate_input(EXAMPLE, {"prompt": "p", "image": "file:///etc/passwd"})
    assert res.errors[0]["msg"] == "'file' is not a valid URL scheme. 'data', 'http', or 'https' is supported."
    # A huge bad value is not echoed whole.
    res = validate_input(EXAMPLE, {"prompt": "p", "image": "/" + "x" * 100_000})
    assert len(res.errors[0]["msg"]) < 200


@pytest.mark.parametrize("value", [{"prompt": "p", "steps": 1}, {"prompt": "p", "steps": 100}])
def test_inclusive_bounds(value):
    assert validate_input(EXAMPLE, value).ok


def test_redaction_masks_every_secret_shape_and_leaves_the_rest():
    secret = {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
    doc = doc_with({
        "key": dict(secret),
        "maybe": {**secret, "nullable": True},
        "keys": {"type": "array", "items": dict(secret)},
        "wrapped": {"allOf": [{"$ref": "#/components/schemas/Tok"}]},
        "plain": {"type": "string"},
    }, extra_components={"Tok": dict(secret)})
    value = {"key": "k1", "maybe": None, "keys": ["a", None], "wrapped": "w", "plain": "visible", "extra": 1}
    before = copy.deepcopy(value)
    assert redact_input(doc, value) == {"key": REDACTED, "maybe": None, "keys": [REDACTED, None],
                                        "wrapped": REDACTED, "plain": "visible", "extra": 1}
    assert value == before, "the clear value (the one the worker gets) must not be changed"
    assert redact_input(EXAMPLE, {"prompt": "p", "api_key": "sk-1"}) == {"prompt": "p", "api_key": REDACTED}
    # Training falls back to Input, as validation does; no schema knows no secret.
    assert redact_input(EXAMPLE, {"api_key": "sk-1"}, component="TrainingInput") == {"api_key": REDACTED}
    assert redact_input(None, {"api_key": "sk-1"}) == {"api_key": "sk-1"}
    assert redact_input(EXAMPLE, "not an object") == "not an object"
