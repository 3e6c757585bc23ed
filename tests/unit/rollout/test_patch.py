"""components.rollout.patch: RFC 7386 merge patches and the fields they change."""

import copy
from typing import Any

import pytest

from components.rollout.patch import changed_fields, merge_patch
from components.rollout.plans import VERSION_ANNOTATION
from tests.unit.rollout.objects import isvc


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 5}}, {"a": 1, "b": {"c": 5, "d": 3}}),  # nested merge
        ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),  # null deletes
        ({"a": 1}, {"b": None}, {"a": 1}),  # deleting what is absent is a no-op
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),  # lists are replaced, not merged
        ({"a": "x"}, {"a": {"b": 1}}, {"a": {"b": 1}}),  # an object replaces a scalar
        ({"a": {"b": 1}}, {"a": {"b": None, "c": None}}, {"a": {}}),  # nulls inside nested objects
    ],
)
def test_merge_patch(target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert target == before  # pure


def test_changed_fields_names_annotation_keys() -> None:
    patch = {"metadata": {"annotations": {VERSION_ANNOTATION: "2"}}, "spec": {"predictor": {"canaryTrafficPercent": 5}}}
    changes = {c.path: (c.before, c.after) for c in changed_fields(isvc(), patch)}
    assert changes == {
        f'metadata.annotations["{VERSION_ANNOTATION}"]': (None, "2"),
        "spec.predictor.canaryTrafficPercent": (None, 5),
    }
