"""A flow's event log after a sequence number (studio/api/events.py)."""

from __future__ import annotations

import pytest

from engine import api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_rate_counts")]


def test_events_since_a_sequence_number(c, routine, user):
    flow = api.start_flow(routine("t_echo", "t_echo", "t_echo"), user)
    everything = c.get(f"/api/flows/{flow.pk}/events").json()
    assert [e["seq"] for e in everything["events"]] == list(range(1, flow.seq + 1))
    later = c.get(f"/api/flows/{flow.pk}/events?since=3&limit=2").json()
    assert [e["seq"] for e in later["events"]] == [4, 5]
    assert later["more"] is (flow.seq > 5) and later["seq"] == flow.seq
    assert c.get(f"/api/flows/{flow.pk}/events?since={flow.seq}").json()["events"] == []
