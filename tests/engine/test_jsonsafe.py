"""The one check of what every database stores alike (engine.jsonsafe): NUL characters and
lone surrogates in text and keys, NaN and Infinity, JSON nested too deeply, numbers too long,
ids out of a column's range — refused with a message that says what is wrong and where, the
same on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from engine import jsonsafe

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.bothmodes,
    pytest.mark.usefixtures("fresh_rate_counts"),
]
HUGE = "9223372036854775808"  # one more than the largest database integer
DEEP = "[" * 1000 + "]" * 1000  # Python's parser runs out of stack on this


def nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"answer": "a\x00b"}, "input.answer: text must not contain NUL characters"),
        ({"answer": "a\ud800b"}, "input.answer: text must not contain lone surrogates"),
        ({"list": [1, {"x": "\udfff"}]}, "input.list[1].x: text must not contain lone"),
        ({"a\x00": 1}, "input['a\\x00']: a key must not contain NUL characters"),
        ({"n": float("nan")}, "input.n: numbers must be finite"),
        ({"n": float("inf")}, "input.n: numbers must be finite"),
        ("\x00", "input: text must not contain NUL characters"),
        (json.loads(nested(65)), "input: JSON must not be nested more than 64 levels"),
        ({"when": object()}, "input must be JSON-serialisable"),
    ],
)
def test_ensure_json_names_what_is_wrong_and_where(value, message):
    with pytest.raises(ValueError) as refused:
        jsonsafe.ensure_json(value, "input")
    assert message in str(refused.value)


@pytest.mark.django_db(transaction=False)
@pytest.mark.parametrize(
    ("bad", "where", "problem"),
    [
        ("a\x00b", "input.items[20]: ", "text must not contain NUL characters"),
        ("\ud800", "input.items[20]: ", "text must not contain lone surrogates"),
        (float("nan"), "input.items[20]: ", "numbers must be finite"),
        ({"k\udc00": 1}, "input.items[20]['k", "a key must not contain lone surrogates"),
        (json.loads(nested(64)), "input: ", "JSON must not be nested more than 64 levels"),
    ],
)
def test_ensure_json_finds_a_problem_after_many_clean_parts_and_names_it(bad, where, problem):
    """Most values are clean, so the check walks them without naming each part; a problem
    anywhere is still found, and named as before."""
    clean = {"n": 1, "s": "é", "f": 2.5, "l": [None, True, {"x": "y"}] * 5}
    value = {"first": clean, "items": [clean] * 20 + [bad], "last": clean}
    with pytest.raises(ValueError) as refused:
        jsonsafe.ensure_json(value, "input")
    assert str(refused.value).startswith(where), str(refused.value)
    assert problem in str(refused.value)


@pytest.mark.django_db(transaction=False)
def test_ensure_json_accepts_what_every_database_stores():
    jsonsafe.ensure_json(json.loads(nested(63)), "input")  # 64 levels with the root
    jsonsafe.ensure_json({"emoji": "\U0001f600", "é": [1, 2.5, None, True], "d": "x"}, "input")


@pytest.mark.django_db(transaction=False)
def test_loads_never_exhausts_the_stack_and_refuses_what_cannot_be_stored():
    for text in (DEEP, "[" * 100_000, nested(1000)):
        with pytest.raises(jsonsafe.UnsafeValue, match="nested more than 64 levels"):
            jsonsafe.loads(text, "params")
    with pytest.raises(jsonsafe.NotJSON, match="NaN is not a JSON value"):
        jsonsafe.loads('{"a": NaN}')
    with pytest.raises(jsonsafe.UnsafeValue, match="a number has too many digits"):
        jsonsafe.loads("1" * 5000)
    with pytest.raises(jsonsafe.UnsafeValue, match="numbers must be finite"):
        jsonsafe.loads("[1e999]")
    with pytest.raises(json.JSONDecodeError):
        jsonsafe.loads("{nope")
    assert jsonsafe.loads('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a proper pair


@pytest.mark.django_db(transaction=False)
def test_parse_id_takes_only_ascii_numbers_a_column_holds():
    assert [jsonsafe.parse_id(t) for t in ("0", "42", str(jsonsafe.MAX_ID))] == [
        0,
        42,
        jsonsafe.MAX_ID,
    ]
    for text in (HUGE, "1" * 5000, "-1", "+1", " 1", "1.0", "²", "١٢", "", None):
        assert jsonsafe.parse_id(text) is None
