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

PICKLE_KEY = "__flowstudio_pickle__"
_SALT = "engine.codec.result"


class TamperedResult(ValueError):
    """A stored pickled result whose signature does not match."""


def encode(value: Any) -> Any:
    """A JSON-storable form of `value`."""
    try:
        return json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    except (TypeError, ValueError):
        pass
    try:
        raw = pickle.dumps(value)
    except Exception as exc:  # an unpicklable value: keep what can be shown of it
        return {"repr": repr(value), "unstorable": f"{type(exc).__name__}: {exc}"}
    token = signing.Signer(salt=_SALT).sign(base64.b64encode(raw).decode("ascii"))
    return {PICKLE_KEY: token, "repr": repr(value)}


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
