"""copy_data: the deep copy the LTM core makes of states, params and payloads."""

from __future__ import annotations

import enum
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


def test_a_flat_list_or_dict_is_a_new_one_and_a_subclass_is_deep_copied():
    flat_list, flat_dict = [1, "b", None, 2.5, True], {"a": 1, "b": None}
    for flat in (flat_list, flat_dict):
        copied = copy_data(flat)
        assert copied == flat and copied is not flat and type(copied) is type(flat)
    copied_list = copy_data(flat_list)
    copied_list.append(3)
    assert flat_list == [1, "b", None, 2.5, True]
    # An item that is not a plain scalar (a nested list, a subclass of one) is copied too.
    nested = [1, [2]]
    assert copy_data(nested)[1] is not nested[1]

    class Text(str):
        pass

    holder = [Text("t")]
    assert copy_data(holder) == holder and copy_data(holder) is not holder


def test_a_list_of_dicts_is_new_at_every_level_with_its_types_kept():
    arrivals = [{"n": n, "tags": ["a", n], "pair": (n, [n])} for n in range(50)]
    copied = copy_data(arrivals)
    assert copied == arrivals
    pairs = zip(copied, arrivals, strict=True)
    assert all(c is not a and c["tags"] is not a["tags"] for c, a in pairs)
    copied[0]["pair"][1].append("x")
    assert arrivals[0]["pair"] == (0, [0]) and type(copied[0]["pair"]) is tuple


def test_plain_data_holding_an_enum_a_date_or_a_subclass_keeps_every_type():
    class Size(enum.IntEnum):
        LARGE = 3

    class Tag(str):
        pass

    original = [{"size": Size.LARGE, "n": 1}, {"when": datetime(2026, 1, 2)}, [Tag("t"), 2]]
    copied = copy_data(original)
    assert copied == original
    assert type(copied[0]["size"]) is Size and type(copied[2][0]) is Tag
    assert copied[0] is not original[0] and copied[2] is not original[2]
