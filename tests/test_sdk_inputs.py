"""Input() / FieldInfo / MISSING."""

import copy
import dataclasses
import pickle

import pytest

from minicog.sdk import MISSING, FieldInfo, Input
from minicog.sdk import inputs


def test_input_without_default_is_required():
    info = Input(description="Prompt text")
    assert isinstance(info, FieldInfo)
    assert info.default is MISSING
    assert info.required
    assert info.description == "Prompt text"


def test_input_default_none_is_optional_unlike_cog():
    info = Input(default=None)
    assert info.default is None
    assert not info.required


def test_input_keeps_every_option():
    info = Input(default=3, description="d", ge=1, le=10, min_length=2, max_length=4,
                 regex="^x", choices=[1, 3], deprecated=True, accept="image/*")
    assert dataclasses.asdict(info) == {
        "default": 3, "description": "d", "ge": 1, "le": 10, "min_length": 2, "max_length": 4,
        "regex": "^x", "choices": [1, 3], "deprecated": True, "accept": "image/*",
    }


def test_field_names_match_cog_and_the_contract():
    names = [f.name for f in dataclasses.fields(FieldInfo)]
    assert names == ["default", "description", "ge", "le", "min_length", "max_length",
                     "regex", "choices", "deprecated", "accept"]


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        Input(1, "description")  # type: ignore[misc]


def test_fieldinfo_is_frozen():
    info = Input(default=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.default = 2  # type: ignore[misc]


def test_default_factory_is_refused_with_cogs_message():
    with pytest.raises(TypeError) as exc:
        Input(default_factory=list)
    assert str(exc.value) == (
        "default_factory is not supported in Input(). "
        "Use a literal default value instead: Input(default=...). "
        "Mutable defaults like lists should use immutable alternatives "
        "(e.g. a comma-separated string) or be constructed in predict()."
    )


def test_missing_is_a_singleton_through_copy_and_pickle():
    assert copy.copy(MISSING) is MISSING
    assert copy.deepcopy(MISSING) is MISSING
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
    assert inputs._Missing() is MISSING
    assert repr(MISSING) == "MISSING"
    assert not MISSING


def test_fieldinfo_pickles_with_missing_default():
    info = pickle.loads(pickle.dumps(Input(description="x")))
    assert info.default is MISSING and info.description == "x"
