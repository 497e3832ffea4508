"""Run rules shared by every run record (minicog.engine.rules): statuses, Cog's metric
merge and the output shape read from the schema."""

import pytest

from minicog import embed
from minicog.engine.rules import (STATUSES, TERMINAL_STATUSES, merge_metric, output_is_array, output_schema,
                                  shape_output)
from minicog.server import prediction


def test_the_server_record_and_the_embedding_handle_use_these_rules():
    assert prediction.merge_metric is merge_metric
    assert prediction.TERMINAL_STATUSES is TERMINAL_STATUSES
    assert embed.rules.merge_metric is merge_metric


def test_statuses():
    assert STATUSES[:2] == ("starting", "processing")
    assert TERMINAL_STATUSES == set(STATUSES[2:]) == {"succeeded", "failed", "canceled"}


def test_metrics_merge_rules():
    m = {}
    merge_metric(m, "tokens", 2, "increment")
    merge_metric(m, "tokens", 3, "increment")
    merge_metric(m, "tokens", "x", "increment")  # non-numeric: ignored
    merge_metric(m, "lst", 1, "append")
    merge_metric(m, "lst", 2, "append")
    merge_metric(m, "s", "x", "replace")
    merge_metric(m, "s", "y", "append")
    merge_metric(m, "timing.pre", 0.25, "replace")
    merge_metric(m, "gone", 1, "replace")
    merge_metric(m, "gone", None, "replace")
    merge_metric(m, "s2", 1, "replace")
    merge_metric(m, "s2.inner", 1, "replace")  # non-object intermediate replaced by {}
    merge_metric(m, "f", 0.5, "increment")
    assert m == {"tokens": 5, "lst": [1, 2], "s": ["x", "y"], "timing": {"pre": 0.25},
                 "s2": {"inner": 1}, "f": 0.5}



def test_deleting_below_a_missing_branch_changes_nothing():
    m = {"a": 1}
    merge_metric(m, "x.y", None, "replace")
    assert m == {"a": 1}


_DOC = {"components": {"schemas": {
    "Output": {"type": "array", "items": {"type": "string"}},
    "TrainingOutput": {"type": "string"},
}}}


def test_output_schema_and_shape_follow_the_mode():
    assert output_schema(_DOC)["type"] == "array"
    assert output_is_array(_DOC) is True
    assert output_is_array(_DOC, "train") is False
    assert output_is_array({"components": {"schemas": {"Output": {"type": "string"}}}}, "train") is False
    assert output_is_array(None) is None and output_is_array({}) is None


@pytest.mark.parametrize("items, array, expected", [
    ([], False, None), (["a"], False, "a"), (["a", "b"], False, ["a", "b"]),
    ([], True, []), (["a"], True, ["a"]),
])
def test_shape_output(items, array, expected):
    assert shape_output(items, array=array) == expected
