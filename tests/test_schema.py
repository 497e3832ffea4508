"""Tests for minicog.schema: Cog's OpenAPI layout from live signatures, InputSpec, errors.

No ``from __future__ import annotations`` here: the local classes used as annotations must be
real objects for ``typing.get_type_hints``, as in model files.
"""


import json
import logging
import types
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, TypedDict, Union

import pytest

from minicog._version import COG_VERSION
from minicog.errors import SchemaError
from minicog.loader import load_predictor
from minicog.schema import build_schema, describe_inputs, output_schema, title_case
from minicog.sdk import MISSING, BaseModel, ConcatenateIterator, File, Input, Path, Secret
from minicog.sdk.types import AsyncConcatenateIterator, Opaque
from minicog.validation import validate_input
from support import predictor

from typing import Annotated

# The complete example of cog-behaviour.md section 9, as coglet serves it.
COG_EXAMPLE = json.loads(r'''
{"components":{"schemas":{
 "HTTPValidationError":{"properties":{"detail":{"items":{"$ref":"#/components/schemas/ValidationError"},"title":"Detail","type":"array"}},"title":"HTTPValidationError","type":"object"},
 "Input":{"properties":{
   "prompt":{"description":"Prompt text","title":"Prompt","type":"string","x-order":0},
   "steps":{"default":20,"maximum":100,"minimum":1,"title":"Steps","type":"integer","x-order":1},
   "scheduler":{"allOf":[{"$ref":"#/components/schemas/scheduler"}],"default":"ddim","x-order":2},
   "image":{"default":null,"description":"Init image","format":"uri","nullable":true,"title":"Image","type":"string","x-order":3},
   "api_key":{"default":null,"format":"password","nullable":true,"title":"Api Key","type":"string","writeOnly":true,"x-cog-secret":true,"x-order":4},
   "seed":{"title":"Seed","type":"integer","x-order":5}},
  "required":["prompt","seed"],"title":"Input","type":"object"},
 "Output":{"format":"uri","title":"Output","type":"string"},
 "PredictionRequest":{"properties":{"id":{"title":"Id","type":"string"},"input":{"$ref":"#/components/schemas/Input"}},"title":"PredictionRequest","type":"object"},
 "PredictionResponse":{"properties":{"completed_at":{"format":"date-time","title":"Completed At","type":"string"},"created_at":{"format":"date-time","title":"Created At","type":"string"},"error":{"title":"Error","type":"string"},"id":{"title":"Id","type":"string"},"input":{"$ref":"#/components/schemas/Input"},"logs":{"title":"Logs","type":"string"},"metrics":{"title":"Metrics","type":"object"},"output":{"$ref":"#/components/schemas/Output"},"started_at":{"format":"date-time","title":"Started At","type":"string"},"status":{"title":"Status","type":"string"},"version":{"title":"Version","type":"string"}},"title":"PredictionResponse","type":"object"},
 "Status":{"description":"An enumeration.","enum":["starting","processing","succeeded","canceled","failed"],"title":"Status","type":"string"},
 "ValidationError":{"properties":{"loc":{"items":{"anyOf":[{"type":"string"},{"type":"integer"}]},"title":"Location","type":"array"},"msg":{"title":"Message","type":"string"},"type":{"title":"Error Type","type":"string"}},"required":["loc","msg","type"],"title":"ValidationError","type":"object"},
 "scheduler":{"description":"An enumeration.","enum":["ddim","euler"],"title":"scheduler","type":"string"}}},
 "info":{"title":"Cog","version":"0.23.1"},"openapi":"3.0.2",
 "paths":{
  "/":{"get":{"operationId":"root__get","responses":{"200":{"content":{"application/json":{"schema":{}}},"description":"Successful Response"}},"summary":"Root"}},
  "/health-check":{"get":{"operationId":"healthcheck_health_check_get","responses":{"200":{"content":{"application/json":{"schema":{}}},"description":"Successful Response"}},"summary":"Healthcheck"}},
  "/predictions":{"post":{"description":"Run a single prediction on the model","operationId":"predict_predictions_post","requestBody":{"content":{"application/json":{"schema":{"$ref":"#/components/schemas/PredictionRequest"}}}},"responses":{"200":{"content":{"application/json":{"schema":{"$ref":"#/components/schemas/PredictionResponse"}}},"description":"Successful Response"},"422":{"content":{"application/json":{"schema":{"$ref":"#/components/schemas/HTTPValidationError"}}},"description":"Validation Error"}},"summary":"Predict"}},
  "/predictions/{prediction_id}/cancel":{"post":{"operationId":"cancel_predictions__prediction_id__cancel_post","parameters":[{"in":"path","name":"prediction_id","required":true,"schema":{"title":"Prediction Id","type":"string"}}],"responses":{"200":{"content":{"application/json":{"schema":{}}},"description":"Successful Response"},"422":{"content":{"application/json":{"schema":{"$ref":"#/components/schemas/HTTPValidationError"}}},"description":"Validation Error"}},"summary":"Cancel"}}}}
''')


def expected_minicog_example() -> dict:
    """Cog's example with minicog's documented difference: ``seed: int = Input(default=None)``
    is optional and nullable with ``default: null`` instead of required."""
    doc = json.loads(json.dumps(COG_EXAMPLE))
    inp = doc["components"]["schemas"]["Input"]
    inp["properties"]["seed"].update({"default": None, "nullable": True})
    inp["required"] = ["prompt"]
    return doc


def loaded(path: str, mode: str = "predict"):
    return load_predictor(predictor(path), mode=mode)


def fn_of(f):
    """build_schema takes LoadedPredictor-like objects: anything with fn and streaming."""
    return types.SimpleNamespace(fn=f, streaming=getattr(f, "__cog_streaming__", False))


# --- the complete example --------------------------------------------------------------


def test_complete_example_matches_cog_except_documented_difference():
    doc = build_schema(loaded("schema_example.py"))
    assert doc == expected_minicog_example()
    json.dumps(doc)  # plain JSON


def test_complete_example_key_order_follows_cogs_generator():
    doc = build_schema(loaded("schema_example.py"))
    assert list(doc["components"]["schemas"]) == [
        "Input", "Output", "scheduler", "PredictionRequest", "PredictionResponse", "Status",
        "HTTPValidationError", "ValidationError"]
    props = doc["components"]["schemas"]["Input"]["properties"]
    assert list(props) == ["prompt", "steps", "scheduler", "image", "api_key", "seed"]
    assert list(props["steps"]) == ["x-order", "title", "type", "default", "minimum", "maximum"]
    assert list(props["image"]) == ["x-order", "title", "type", "format", "default", "nullable", "description"]
    assert list(props["scheduler"]) == ["allOf", "x-order", "default"]
    assert list(doc["paths"]) == ["/", "/health-check", "/predictions", "/predictions/{prediction_id}/cancel"]
    assert doc["info"] == {"title": "Cog", "version": COG_VERSION}


def test_example_schema_drives_validation():
    doc = build_schema(loaded("schema_example.py"))
    ok = validate_input(doc, {"prompt": "p", "image": None})
    assert ok.errors == [] and ok.value == {"prompt": "p", "image": None}
    bad = validate_input(doc, {"steps": 0, "scheduler": "x"})
    assert [e["msg"] for e in bad.errors] == [
        "0 is less than the minimum of 1", '"x" is not one of ["ddim","euler"]', "Field required"]


# --- input specs -----------------------------------------------------------------------


def test_title_case():
    assert title_case("api_key") == "Api Key"
    assert title_case("prompt") == "Prompt"
    assert title_case("num_inference_steps") == "Num Inference Steps"
    assert title_case("x2_y") == "X2 Y"


def test_input_spec_fields_for_the_worker():
    class TD(TypedDict):
        a: int

    def run(
        p: Path,
        f: File = Input(default=None),
        paths: list[Path] = Input(default=None),
        maybe_files: Optional[List[File]] = None,
        s: Secret = Input(description="key"),
        os_: Optional[Secret] = None,
        secrets: list[Secret] = Input(default=None),
        anything: Any = None,
        d: dict = Input(default=None),
        td: TD = Input(default=None),
        opaque: Annotated[str, Opaque] = Input(default=None),
        u: Union[int, str] = 1,
        ou: Optional[Union[int, str]] = None,
        nested: list[list[int]] = Input(default=None),
        plain_default: float = 0.5,
    ) -> str:
        return ""

    specs = {s.name: s for s in describe_inputs(run)}
    assert [s.order for s in specs.values()] == list(range(len(specs)))
    p = specs["p"]
    assert (p.file_kind, p.is_list, p.required, p.nullable, p.default) == ("path", False, True, False, MISSING)
    assert p.fragment == {"x-order": 0, "title": "P", "type": "string", "format": "uri"}
    assert (specs["f"].file_kind, specs["f"].nullable, specs["f"].required) == ("file", True, False)
    assert (specs["paths"].file_kind, specs["paths"].is_list) == ("path", True)
    assert specs["paths"].fragment["items"] == {"type": "string", "format": "uri"}
    mf = specs["maybe_files"]
    assert (mf.file_kind, mf.is_list, mf.nullable, mf.required) == ("file", True, True, False)
    assert mf.fragment == {"x-order": 3, "title": "Maybe Files", "type": "array", "items": {"type": "string", "format": "uri"},
                           "default": None, "nullable": True}
    assert specs["s"].is_secret and specs["s"].required
    assert specs["s"].fragment == {"x-order": 4, "title": "S", "type": "string", "format": "password", "writeOnly": True,
                                   "x-cog-secret": True, "description": "key"}
    assert specs["os_"].is_secret and specs["os_"].nullable
    assert not specs["secrets"].is_secret and specs["secrets"].fragment["items"]["x-cog-secret"] is True
    for name in ("anything", "d", "td", "opaque"):
        assert specs[name].fragment["type"] == "object", name
        assert specs[name].file_kind is None
    assert specs["u"].fragment == {"x-order": 11, "title": "U", "anyOf": [{"type": "integer"}, {"type": "string"}], "default": 1}
    assert specs["ou"].fragment == {"x-order": 12, "title": "Ou", "anyOf": [{"type": "integer", "nullable": True},
                                                                             {"type": "string", "nullable": True}],
                                    "default": None, "nullable": True}
    assert specs["nested"].fragment["items"] == {"type": "array", "items": {"type": "integer"}}
    assert specs["plain_default"].fragment == {"x-order": 14, "title": "Plain Default", "type": "number", "default": 0.5}


def test_none_default_is_optional_and_nullable_whatever_the_annotation():
    def run(seed: int = Input(default=None), plain: str = None, opt: Optional[str] = Input(), bare_secret: Secret = None) -> str:
        return ""

    specs = {s.name: s for s in describe_inputs(run)}
    assert specs["seed"].fragment == {"x-order": 0, "title": "Seed", "type": "integer", "default": None, "nullable": True}
    assert not specs["seed"].required and specs["seed"].default is None
    assert specs["plain"].nullable and not specs["plain"].required
    # Optional without a default is optional without a default key (Cog's generator puts only
    # non-optional types and unions in 'required'); the validator passes None when omitted
    assert not specs["opt"].required and specs["opt"].nullable and "default" not in specs["opt"].fragment
    assert specs["bare_secret"].nullable and specs["bare_secret"].is_secret


def test_all_constraint_keywords_in_cogs_order():
    def run(
        text: str = Input(default="xx", description="d", min_length=2, max_length=9, regex="^x", deprecated=True, accept="image/*"),
        n: float = Input(ge=0.5, le=2.5),
    ) -> str:
        return ""

    text, n = describe_inputs(run)
    assert list(text.fragment.items()) == [
        ("x-order", 0), ("title", "Text"), ("type", "string"), ("default", "xx"), ("description", "d"),
        ("minLength", 2), ("maxLength", 9), ("pattern", "^x"), ("deprecated", True), ("x-cog-accept", "image/*")]
    assert n.fragment == {"x-order": 1, "title": "N", "type": "number", "minimum": 0.5, "maximum": 2.5}


def test_integer_choices_and_reserved_names():
    def run(k: int = Input(default=1, choices=[1, 2, 4]), Status: str = Input(choices=["a"])) -> int:
        return 1

    doc = build_schema(fn_of(run))
    schemas = doc["components"]["schemas"]
    assert schemas["k"] == {"title": "k", "description": "An enumeration.", "enum": [1, 2, 4], "type": "integer"}
    assert schemas["Input"]["properties"]["k"] == {"allOf": [{"$ref": "#/components/schemas/k"}], "x-order": 0, "default": 1}
    # a parameter named like a fixed component gets its own enum name, Status stays Cog's
    assert schemas["Status"]["enum"][0] == "starting"
    assert schemas["Input"]["properties"]["Status"]["allOf"] == [{"$ref": "#/components/schemas/StatusEnum"}]
    assert schemas["StatusEnum"]["enum"] == ["a"]
    assert validate_input(doc, {"k": 3, "Status": "a"}).errors[0]["msg"] == "3 is not one of [1,2,4]"


@pytest.mark.parametrize("annotation,bad", [
    ("complex", "complex"), ("set[int]", "set[int]"), ("Union[Path, str]", "Union"), ("bytes", "bytes"),
    ("list[list[Path]]", "list[list"),
])
def test_unsupported_input_annotations_name_parameter_and_type(annotation, bad):
    namespace: dict = {}
    exec(f"def run(weird: {annotation}) -> str: ...", {**globals()}, namespace)
    with pytest.raises(SchemaError) as info:
        describe_inputs(namespace["run"])
    assert "'weird'" in str(info.value) and bad in str(info.value)


def test_other_input_errors():
    def no_annotation(x=1) -> str: ...

    def bad_choices(x: int = Input(choices=["a"])) -> str: ...

    def choices_on_path(x: Path = Input(choices=["a"])) -> str: ...

    def bad_default(x: Any = Input(default=object())) -> str: ...

    def positional(x: int, /) -> str: ...

    def forward(x: "Undefined") -> str: ...  # noqa: F821

    for fn, text in ((no_annotation, "no type annotation"), (bad_choices, "do not match"), (choices_on_path, "choices need"),
                     (bad_default, "cannot be written as JSON"), (positional, "positional-only"), (forward, "Undefined")):
        with pytest.raises(SchemaError, match=text):
            describe_inputs(fn)


def test_varargs_are_skipped_and_path_defaults_become_strings():
    def run(a: int, *args, b: Path = Input(default=Path("/tmp/x.png")), **kwargs) -> str: ...

    assert [s.name for s in describe_inputs(run)] == ["a", "b"]
    assert describe_inputs(run)[1].fragment["default"] == "/tmp/x.png"


# --- outputs ---------------------------------------------------------------------------


class Out(BaseModel):
    text: str
    image: Optional[Path]
    scores: list[float]


def test_output_fragments():
    def o(tp):
        def f() -> tp: ...
        f.__annotations__["return"] = tp
        return output_schema(f)

    assert o(str) == {"title": "Output", "type": "string"}
    assert o(Path) == {"title": "Output", "type": "string", "format": "uri"}
    assert o(list[Path]) == {"title": "Output", "type": "array", "items": {"type": "string", "format": "uri"}}
    assert o(Iterator[str]) == {"title": "Output", "type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"}
    assert o(AsyncIterator[int])["x-cog-array-type"] == "iterator"
    assert o(ConcatenateIterator[str]) == {"title": "Output", "type": "array", "items": {"type": "string"},
                                           "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"}
    assert o(AsyncConcatenateIterator[str])["x-cog-array-display"] == "concatenate"
    assert o(Out) == {"title": "Output", "type": "object", "properties": {
        "text": {"type": "string", "title": "Text"},
        "image": {"type": "string", "format": "uri", "nullable": True, "title": "Image"},
        "scores": {"type": "array", "items": {"type": "number"}, "title": "Scores"}},
        "required": ["text", "scores"]}
    assert o(Dict[str, int]) == {"title": "Output", "type": "object", "additionalProperties": {"type": "integer"}}
    assert o(dict) == {"title": "Output", "type": "object"}
    assert o(Any) == {"title": "Output", "type": "object"}
    assert o(Optional[str]) == {"title": "Output", "type": "string", "nullable": True}
    assert o(Union[int, str]) == {"title": "Output", "anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert o(Secret)["x-cog-secret"] is True


def test_undescribable_output_is_any_with_a_warning(caplog):
    class Custom:
        pass

    def f() -> Custom: ...

    def g(): ...

    with caplog.at_level(logging.WARNING, logger="minicog.schema"):
        assert output_schema(f) == {"title": "Output"}
    assert any("Custom" in r.getMessage() for r in caplog.records)
    assert output_schema(g) == {"title": "Output"}


# --- streaming, training, merging --------------------------------------------------------


def test_streaming_flag_and_training_merge():
    p = loaded("schema_stream_train.py")
    t = load_predictor(predictor("schema_stream_train.py") + ":Runner", mode="train")
    doc = build_schema(p, t)
    json.dumps(doc)
    assert doc["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert "x-cog-streaming" not in doc["paths"]["/trainings"]["post"]
    assert list(doc["paths"]) == ["/", "/health-check", "/predictions", "/predictions/{prediction_id}/cancel",
                                  "/trainings", "/trainings/{training_id}/cancel"]
    train_post = doc["paths"]["/trainings"]["post"]
    assert train_post["operationId"] == "train_trainings_post"
    assert train_post["summary"] == "Train" and train_post["description"] == "Run a single training on the model"
    assert train_post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TrainingRequest"}
    cancel = doc["paths"]["/trainings/{training_id}/cancel"]["post"]
    assert cancel["operationId"] == "cancel_trainings__training_id__cancel_post"
    assert cancel["parameters"][0]["schema"] == {"title": "Training Id", "type": "string"}
    schemas = doc["components"]["schemas"]
    assert list(schemas)[:8] == ["Input", "Output", "mode", "PredictionRequest", "PredictionResponse", "Status",
                                 "HTTPValidationError", "ValidationError"]
    assert {"TrainingInput", "TrainingOutput", "TrainingRequest", "TrainingResponse"} <= set(schemas)
    assert schemas["TrainingResponse"]["properties"]["output"] == {"$ref": "#/components/schemas/TrainingOutput"}
    assert schemas["TrainingOutput"]["properties"]["weights"] == {"type": "string", "format": "uri", "title": "Weights"}
    assert schemas["Output"]["x-cog-array-display"] == "concatenate"
    # run() and train() both have a `mode` enum with different choices: predict keeps `mode`,
    # training gets its own component so each route validates against its own choices
    assert schemas["mode"]["enum"] == ["fast", "slow"]
    assert validate_input(doc, {"mode": "lora"}, component="TrainingInput").ok
    assert validate_input(doc, {"mode": "fast"}).ok
    assert not validate_input(doc, {"mode": "fast"}, component="TrainingInput").ok


def test_train_function_only():
    t = load_predictor(predictor("schema_stream_train.py") + ":train", mode="train")
    doc = build_schema(None, t)
    schemas = doc["components"]["schemas"]
    assert list(schemas) == ["TrainingInput", "TrainingOutput", "TrainingRequest", "TrainingResponse", "Status",
                             "HTTPValidationError", "ValidationError"]
    assert schemas["TrainingInput"]["properties"]["epochs"] == {"x-order": 0, "title": "Epochs", "type": "integer", "default": 1, "minimum": 1}
    assert "required" not in schemas["TrainingInput"]
    assert "/predictions" not in doc["paths"] and "/trainings" in doc["paths"]
    assert validate_input(doc, {"epochs": 0}, component="TrainingInput").errors[0]["msg"] == "0 is less than the minimum of 1"


def test_streaming_detected_from_decorator_without_loader():
    from minicog.sdk import streaming

    @streaming
    def run(x: str) -> Iterator[str]: ...

    assert build_schema(types.SimpleNamespace(fn=run))["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    def plain(x: str) -> str: ...
    assert "x-cog-streaming" not in build_schema(fn_of(plain))["paths"]["/predictions"]["post"]
