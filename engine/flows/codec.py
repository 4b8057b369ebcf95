"""How step results are stored.

JSON (Django's encoder) wherever the value allows it. Other picklable values, which scripts may
return, are pickled and signed with the project's secret: a tampered value is refused, never
unpickled. The studio shows their repr.
"""

from __future__ import annotations

import base64
import json
import pickle
from typing import Any

from django.core import signing
from django.core.serializers.json import DjangoJSONEncoder

from engine import jsonsafe
from engine.core.flows.results import ResultsView

PICKLE_KEY = "__flowstudio_pickle__"
_SALT = "engine.codec.result"


class _Encoder(DjangoJSONEncoder):
    """Django's encoder, and a step's view of earlier results (`self.results`, returned or
    kept in a result as is) as the list it reads as."""

    def default(self, o: Any) -> Any:
        if isinstance(o, ResultsView):
            return list(o)
        return super().default(o)


_ENCODER = _Encoder()  # (`json.dumps(value, cls=_Encoder)` makes one at every call)


class TamperedResult(ValueError):
    """A stored pickled result whose signature does not match."""


def encode(value: Any) -> Any:
    """A JSON-storable form of `value`: itself when it is JSON that every database stores
    alike, else pickled (signed) with its repr to show."""
    return encoded(value)[0]


def encoded(value: Any) -> tuple[Any, str]:
    """`encode(value)` and its JSON text, as a step's result row stores it: the text made
    once, where a step's result was made text three times (to check it, to read it back,
    to store it). (A value whose keys meet once made text, as `{1: "a", "1": "b"}`, keeps
    both in its text; it reads back as its stored form, the last key winning, as JSON
    reads a repeated key everywhere.)"""
    try:
        text = _ENCODER.encode(value)
        stored = json.loads(text)
        jsonsafe.ensure_json(stored, "the result", parsed=True)
        return stored, text
    except (TypeError, ValueError):
        pass  # not JSON, or JSON PostgreSQL refuses (NUL, a lone surrogate, NaN, too deep)
    except RecursionError:
        stored = {"repr": "<a value nested too deeply to store>", "unstorable": "RecursionError"}
        return stored, _ENCODER.encode(stored)
    try:
        raw = pickle.dumps(value)
    except Exception as exc:  # an unpicklable value: keep what can be shown of it
        problem = jsonsafe.storable_text(f"{type(exc).__name__}: {exc}")
        stored = {"repr": _shown(value), "unstorable": problem}
        return stored, _ENCODER.encode(stored)
    token = signing.Signer(salt=_SALT).sign(base64.b64encode(raw).decode("ascii"))
    stored = {PICKLE_KEY: token, "repr": _shown(value)}
    return stored, _ENCODER.encode(stored)


def _shown(value: Any) -> str:
    """repr() of `value` (which escapes NUL characters and surrogates), or a placeholder."""
    try:
        return repr(value)
    except Exception as exc:  # a failing __repr__, or a value nested too deeply
        return f"<{type(value).__name__}: repr() failed with {type(exc).__name__}>"


def is_pickled(stored: Any) -> bool:
    return isinstance(stored, dict) and PICKLE_KEY in stored


def decode(stored: Any) -> Any:
    """The value back from its stored form."""
    if not is_pickled(stored):
        return stored
    try:
        payload = signing.Signer(salt=_SALT).unsign(stored[PICKLE_KEY])
    except signing.BadSignature:
        raise TamperedResult("a stored result's signature does not match; refusing it") from None
    return pickle.loads(base64.b64decode(payload))  # signed by this project: not user input


def display(stored: Any) -> Any:
    """What to show of a stored value without unpickling it."""
    if is_pickled(stored):
        return stored.get("repr", "<pickled value>")
    return stored
