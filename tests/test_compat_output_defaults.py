"""More Cog patterns (from the shapes Cog's own unit tests exercise), run through :class:`minicog.Model`."""

from __future__ import annotations

import pytest

from minicog import Model

from support import predictor


def test_object_output_fields_with_a_default_are_not_required_nor_nullable():
    with Model(predictor("compat_defaulted_fields.py") + ":Predictor") as model:
        output = model.schema["components"]["schemas"]["Output"]
        assert output["required"] == ["text"]
        # a default makes a field optional to return, not nullable (only Optional[...] is)
        assert output["properties"]["confidence"] == {"type": "number", "title": "Confidence"}
        assert output["properties"]["debug"] == {"type": "boolean", "title": "Debug"}
        assert output["properties"]["note"]["nullable"] is True
        assert model.predict(text="a") == {"text": "a", "confidence": 0.0, "debug": False, "note": None}
        assert model.predict(text="b", confidence=0.5) == {"text": "b", "confidence": 0.5, "debug": True, "note": None}


def test_pydantic_output_field_with_a_default_is_not_required():
    pytest.importorskip("pydantic")
    with Model(predictor("compat_defaulted_fields.py") + ":PydanticPredictor") as model:
        output = model.schema["components"]["schemas"]["Output"]
        assert output["required"] == ["text"]
        assert output["properties"]["count"] == {"type": "integer", "title": "Count"}
        assert model.predict(text="abc") == {"text": "abc", "count": 3}
