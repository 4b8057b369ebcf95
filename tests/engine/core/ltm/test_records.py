"""copy_data: the deep copy the LTM core makes of states, params and payloads."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from engine.core.ltm.records import copy_data


def test_json_data_is_copied_all_the_way_down():
    original = {"a": [1, {"b": [2, 3]}, "x"], "c": {"d": None, "e": True, "f": 1.5}}
    copied = copy_data(original)
    assert copied == original
    copied["a"][1]["b"].append(4)
    copied["c"]["d"] = "changed"
    assert original == {"a": [1, {"b": [2, 3]}, "x"], "c": {"d": None, "e": True, "f": 1.5}}
    assert copied["a"] is not original["a"] and copied["a"][1] is not original["a"][1]


def test_other_values_are_deep_copied_as_deepcopy_would():
    inner = [1, 2]
    original = {"when": datetime(2026, 1, 2), "pair": (inner, 3), "ordered": OrderedDict(k=[5])}
    copied = copy_data(original)
    assert copied == original
    assert type(copied["ordered"]) is OrderedDict
    copied["pair"][0].append(9)
    copied["ordered"]["k"].append(6)
    assert inner == [1, 2] and original["ordered"]["k"] == [5]
