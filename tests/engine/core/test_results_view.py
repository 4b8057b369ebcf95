"""A step's view of earlier results decodes each one when it is read, and reads as a list."""

from __future__ import annotations

import pytest

from engine.core.flows.results import ResultsView


def test_it_reads_as_the_list_it_stands_for_and_decodes_on_read():
    decoded = []

    def decode(value):
        decoded.append(value)
        return None if value is None else value * 10

    view = ResultsView([1, 2, None, 4], decode, 3)
    assert decoded == []  # nothing decoded before it is read
    assert len(view) == 3
    assert view[0] == 10 and view[-1] is None
    assert decoded == [1, None]
    assert view[1:] == [20, None]
    assert list(view) == [10, 20, None] and view == [10, 20, None]
    assert view + [5] == [10, 20, None, 5] and [0] + view == [0, 10, 20, None]
    assert decoded == [1, None, 2]  # each at most once
    with pytest.raises(IndexError):
        view[3]
    assert repr(view) == "[10, 20, None]"


def test_a_view_past_what_is_stored_reads_none():
    view = ResultsView([7], lambda v: v, 3)
    assert list(view) == [7, None, None]


def test_a_view_kept_in_a_result_is_stored_as_the_list_it_reads_as():
    from engine.flows import codec

    view = ResultsView([{"a": 1}, 2], codec.decode, 2)
    assert codec.encode(view) == [{"a": 1}, 2]
    assert codec.encode({"earlier": view}) == {"earlier": [{"a": 1}, 2]}
