"""How step results are stored (engine.flows.codec): a value JSON cannot hold is pickled and
signed, and a tampered one is refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection

from engine import api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.bothmodes]


def test_non_json_result_is_pickled_signed_and_tamper_checked(routine, user):
    from engine.flows.codec import TamperedResult

    flow = api.start_flow(routine("t_object"), user)
    assert flow.results == [{1, 2, 3}]
    assert api.results_for_display(flow) == ["{1, 2, 3}"]
    stored = flow.stored_results[0]
    stored["__flowstudio_pickle__"] = stored["__flowstudio_pickle__"][:-3] + "abc"
    flow.stored_results = [stored]
    with pytest.raises(TamperedResult):
        flow.results  # noqa: B018


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, "two", None, 2.5, True]},
        "text",
        3,
        {1: "an integer key"},
        (1, 2),
        {"when": datetime(2026, 12, 7, 12, 30, tzinfo=UTC), "amount": Decimal("1.10")},
        {1, 2, 3},  # pickled
        {"x": float("nan")},  # JSON PostgreSQL refuses: pickled
        None,
    ],
)
def test_encoded_is_the_stored_form_with_the_text_it_reads_back_as(value):
    from engine.flows import codec

    stored, text = codec.encoded(value)
    assert stored == codec.encode(value)
    assert json.loads(text) == stored
    if value is None:
        assert stored is None


def test_a_steps_result_is_made_text_once_and_stored_as_that_text(routine, user, monkeypatch):
    """A step's result was made text three times (to check it, to read it back, to store
    it); now once. Its row holds that text, and a step with no result holds NULL."""
    made = []
    encode = json.JSONEncoder.encode

    def counting(self, o):
        made.append(o)
        return encode(self, o)

    monkeypatch.setattr(json.JSONEncoder, "encode", counting)
    flow = api.start_flow(routine("t_echo", "t_result_none", "t_object"), user)
    monkeypatch.undo()
    echoed = {"position": 0, "params": {}, "seen": 0}
    assert sum(1 for o in made if o == echoed) == 1

    from engine.models import FlowResult

    rows = FlowResult.objects.filter(flow=flow).order_by("position")
    assert [(row.position, row.value is None) for row in rows] == [
        (0, False),
        (1, True),
        (2, False),
    ]
    assert rows[0].value == echoed
    table = FlowResult._meta.db_table
    with connection.cursor() as cursor:  # no result: NULL, not JSON's null
        cursor.execute(
            f"SELECT position FROM {table} WHERE flow_id = %s AND value IS NULL", [flow.pk]
        )
        assert cursor.fetchall() == [(1,)]
    assert flow.results == [echoed, None, {1, 2, 3}]
