"""Patterns seen in Cog's own test models, run the way a user runs an unmodified model.

Each case here reproduces (in a predictor written for minicog's tests) an
annotation or behaviour that a model written for Cog relies on and that
minicog once got wrong; the model runs in a real worker through
:class:`minicog.Model`, so schema, validation and the worker all take part.
"""

from __future__ import annotations

import pytest

from minicog import Model

from support import predictor


def test_opaque_keeps_list_and_optional_shape_and_bare_optional_may_be_omitted():
    with Model(predictor("compat_shapes.py") + ":Predictor") as model:
        schemas = model.schema["components"]["schemas"]
        props = schemas["Input"]["properties"]
        # Annotated[List[X], Opaque] is an array of objects, not one object
        assert props["records"]["type"] == "array" and props["records"]["items"] == {"type": "object"}
        # a bare Optional[str] is nullable and not required, with no default key
        assert props["note"]["nullable"] is True and "default" not in props["note"]
        assert schemas["Input"]["required"] == ["records"]
        out = schemas["Output"]["properties"]
        assert out["first"]["type"] == "object"
        assert out["rest"] == {"type": "array", "items": {"type": "object"}, "title": "Rest"}
        assert out["maybe"]["nullable"] is True and schemas["Output"]["required"] == ["first", "rest"]

        records = [{"name": "a", "n": 1}, {"name": "b"}, {"name": "c", "tags": ["x"]}]
        # omitted Optional arrives as None instead of failing with a missing argument
        assert model.predict(records=records) == {"first": records[0], "rest": records[1:], "maybe": None}
        assert model.predict(records=records[:1], note="hi") == {"first": records[0], "rest": [], "maybe": {"note": "hi"}}


def test_cog_yaml_environment_reaches_the_model_and_the_process_environment_wins(tmp_path, monkeypatch):
    (tmp_path / "predict.py").write_text(open(predictor("compat_env.py")).read())
    (tmp_path / "cog.yaml").write_text(
        'predict: "predict.py:Predictor"\n'
        "environment:\n"
        "  - COMPAT_GREETING=hello from cog.yaml\n"
        "  - COMPAT_OVERRIDDEN=from cog.yaml\n"
        "  - COMPAT_WITH_EQUALS=a=b\n"
    )
    monkeypatch.delenv("COMPAT_GREETING", raising=False)
    monkeypatch.delenv("COMPAT_WITH_EQUALS", raising=False)
    monkeypatch.setenv("COMPAT_OVERRIDDEN", "from the shell")
    with Model(cwd=str(tmp_path)) as model:
        assert model.predict(name="COMPAT_WITH_EQUALS") == "hello from cog.yaml|a=b"
        assert model.predict(name="COMPAT_OVERRIDDEN") == "hello from cog.yaml|from the shell"


def test_typeddict_output_lists_its_keys_and_only_the_required_ones_as_required():
    with Model(predictor("compat_typed_outputs.py") + ":TypedDictPredictor") as model:
        output = model.schema["components"]["schemas"]["Output"]
        assert output["type"] == "object"
        assert output["properties"] == {"label": {"type": "string", "title": "Label"},
                                        "score": {"type": "number", "title": "Score"}}
        assert output["required"] == ["label"]
        assert model.predict(label="cat") == {"label": "cat"}
        assert model.predict(label="dog", score=0.25) == {"label": "dog", "score": 0.25}


def test_pydantic_model_output_is_described_field_by_field():
    pytest.importorskip("pydantic")
    with Model(predictor("compat_typed_outputs.py") + ":PydanticPredictor") as model:
        output = model.schema["components"]["schemas"]["Output"]
        assert list(output["properties"]) == ["title", "pages", "keywords", "editor"]
        assert output["properties"]["keywords"] == {"type": "array", "items": {"type": "string"}, "title": "Keywords"}
        assert output["properties"]["editor"]["nullable"] is True
        assert output["required"] == ["title", "pages", "keywords"]
        assert model.predict(title="a short note") == {"title": "a short note", "pages": 12,
                                                        "keywords": ["a", "short", "note"], "editor": None}
