"""What every database stores alike: the one check of JSON values and text before they are
written, and a JSON parser that refuses what the check would refuse.

SQLite stores anything; PostgreSQL refuses NUL characters in text and JSON and lone
surrogates (U+D800 to U+DFFF, which are not Unicode text) anywhere, and its `jsonb` refuses
NaN and Infinity. A value the engine accepts must be stored the same way on both, so these
are refused everywhere, with a message that says what is wrong and where
("input.answer: text must not contain NUL characters"). JSON is also limited to
`MAX_DEPTH` levels of nesting: deeper values cannot be parsed, dumped or shown without
exhausting Python's stack.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

__all__ = [
    "MAX_DEPTH",
    "MAX_ID",
    "NotJSON",
    "UnsafeValue",
    "check_text",
    "ensure_json",
    "loads",
    "parse_id",
    "storable_text",
    "text_problem",
    "to_text",
]

MAX_DEPTH = 64  # levels of nesting a JSON value may have ({"a": 1} has one)
MAX_ID = 2**63 - 1  # the largest value a database integer column holds

_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,39}")
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")


class UnsafeValue(ValueError):
    """A value no database stores alike; `where` names the part of it (may be empty)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


class NotJSON(UnsafeValue):
    """Text that Python's parser reads but that is not JSON: NaN, Infinity, -Infinity."""


def text_problem(text: str, what: str = "text") -> str | None:
    """Why `text` cannot be stored alike everywhere, or None."""
    if "\x00" in text:
        return f"{what} must not contain NUL characters"
    if not text.isascii() and _SURROGATE.search(text):
        return f"{what} must not contain lone surrogates (U+D800 to U+DFFF)"
    return None


def storable_text(text: str, limit: int | None = None) -> str:
    """`text` as every database stores it: NUL characters and lone surrogates written as
    escapes (`\\x00`, `\\ud800`), cut to `limit` characters. For text the engine records
    but nobody typed (a script's error, traceback or wait reason), which must be kept, not
    refused."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if not text.isascii() and _SURROGATE.search(text):
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def check_text(value: Any, where: str) -> Any:
    """`value`, or `UnsafeValue` when it is a string no database stores alike."""
    if isinstance(value, str) and (problem := text_problem(value)):
        raise UnsafeValue(where, problem)
    return value


def _child(path: str, key: Any) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    shown = repr(key)  # escapes NUL and surrogates: the message itself stays storable
    shown = shown if len(shown) <= 42 else shown[:40] + "…"
    return f"{path}[{shown}]"


def ensure_json(
    value: Any, what: str = "", *, max_depth: int = MAX_DEPTH, parsed: bool = False
) -> None:
    """Raise ValueError unless `value` is storable as JSON alike on every database: JSON
    (with Django's encoder: dates, decimals and UUIDs are fine), at most `max_depth` levels
    deep, no NUL characters or lone surrogates in any key or string, no NaN or Infinity.
    `what` names the value in the message ("input" -> "input.answer: ...").

    `parsed`: `value` is what `json.loads` just made (dicts with text keys, lists, text,
    numbers, booleans, None), which JSON encodes by construction: it is only walked, not
    encoded again to find out."""
    # Most values have no problem (a step's result is checked at every step): walked first
    # without naming each part, which cost three quarters of the check; named only if needed.
    if _first_problem(value, what, max_depth, named=False) is not None:
        problem = _first_problem(value, what, max_depth, named=True)
        assert problem is not None
        raise problem
    if parsed:
        return
    try:
        to_text(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what or 'the value'} must be JSON-serialisable: {exc}") from None


_ENCODER = DjangoJSONEncoder()  # (`json.dumps(value, cls=...)` makes one at every call)


def to_text(value: Any) -> str:
    """`value` as JSON text, by Django's encoder (dates, decimals, UUIDs), made once: what
    `json.dumps(value, cls=DjangoJSONEncoder)` gives, without a new encoder at every call."""
    return _ENCODER.encode(value)


def _first_problem(value: Any, what: str, max_depth: int, *, named: bool) -> UnsafeValue | None:
    """The first problem of `value` (depth first, in order) as the error to raise, or None;
    where it is (`input.list[1].x`) only when `named` (otherwise the whole value's name)."""
    stack: list[tuple[Any, str, int]] = [(value, what, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if problem := text_problem(item):
                return UnsafeValue(path, problem)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return UnsafeValue(path, "numbers must be finite (NaN and Infinity are not JSON)")
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                return UnsafeValue(what, f"JSON must not be nested more than {max_depth} levels")
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    where = _child(path, key) if named else path
                    if isinstance(key, str) and (problem := text_problem(key, "a key")):
                        return UnsafeValue(where, problem)
                    children.append((child, where, depth + 1))
            else:
                children = [
                    (child, _child(path, i) if named else path, depth + 1)
                    for i, child in enumerate(item)
                ]
            stack.extend(reversed(children))  # depth first, in order: the first problem is named
    return None


def _not_json(constant: str) -> Any:
    raise NotJSON("", f"{constant} is not a JSON value (numbers must be finite)")


def loads(text: str | bytes, what: str = "", *, max_depth: int = MAX_DEPTH) -> Any:
    """`text` parsed as JSON and checked with `ensure_json`. Raises `json.JSONDecodeError`
    for a syntax error (with its line and column) and `UnsafeValue` for JSON that parses but
    must not be stored: nested too deeply (which never exhausts the stack here), a number of
    thousands of digits, NUL characters or lone surrogates — or its subclass `NotJSON` for
    NaN and Infinity, which Python reads but JSON does not have."""
    try:
        value = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError:
        raise
    except NotJSON as exc:
        raise NotJSON(what, exc.problem) from None
    except RecursionError:
        raise UnsafeValue(what, f"JSON must not be nested more than {max_depth} levels") from None
    except ValueError as exc:
        problem = str(exc)
        if "digits" in problem:  # Python's limit on the length of integers it converts
            problem = "a number has too many digits"
        raise UnsafeValue(what, problem) from None
    ensure_json(value, what, max_depth=max_depth, parsed=True)
    return value


def parse_id(text: Any) -> int | None:
    """`text` as a non-negative integer a database column holds (ASCII digits, at most
    `MAX_ID`), or None for anything else: empty, signs, spaces, other scripts' digits,
    numbers too large."""
    if not isinstance(text, str) or not _ASCII_DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= MAX_ID else None
