"""Flow timelines and LTM run event logs (`studio/web/timeline.py`): each event's item is
rendered once per process and kept, as an event never changes; what differs between viewers
(results hidden from an assignee, a run's history window) and clocks (the time zone) is never
shared."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.test.signals import template_rendered
from django.urls import reverse
from django.utils import timezone

from engine import api
from engine.models import FlowEvent
from studio.web import timeline

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def items_rendered(item: str = timeline.FLOW_EVENT) -> Iterator[list[int]]:
    """The seqs of the event items (template `item`) rendered meanwhile: rendered, not a
    kept copy."""
    seen: list[int] = []

    def on_render(sender, template, context, **kwargs) -> None:
        if template.name == item:
            seen.append(context["event"].seq)

    template_rendered.connect(on_render)
    try:
        yield seen
    finally:
        template_rendered.disconnect(on_render)


def page(client, flow) -> str:
    response = client.get(reverse("studio:flow_detail", args=[flow.pk]))
    assert response.status_code == 200
    return response.content.decode()


def timeline_of(html: str) -> str:
    start = html.index('<section id="flow-timeline"')
    return html[start : html.index("</section>", start)]


def test_an_event_is_rendered_once_however_often_its_page_is(client, user, routine):
    flow = api.start_flow(routine("t_echo", "t_wait", "t_echo"), user)
    client.force_login(user)
    before = list(FlowEvent.objects.filter(flow=flow).values_list("seq", flat=True))
    with items_rendered() as first:
        html = page(client, flow)
    assert sorted(first) == before
    assert all(f'id="flow-event-{seq}"' in html for seq in before)
    with items_rendered() as again:
        assert timeline_of(page(client, flow)) == timeline_of(html)
    assert again == []
    api.push_input(flow, {"answer": 1}, user)
    after = list(FlowEvent.objects.filter(flow=flow).values_list("seq", flat=True))
    with items_rendered() as then:
        html = page(client, flow)
    assert sorted(then) == after[len(before) :]  # only the events written since
    assert all(f'id="flow-event-{seq}"' in html for seq in after)
    assert html.index(f'id="flow-event-{after[-1]}"') < html.index('id="flow-event-1"')


def test_an_assignee_never_gets_the_items_the_owner_sees(client, user, make_user):
    """The owner's page first (the step's result in its event's details), then an assignee's
    whose step hides the results: the same events, without what they carried."""
    bob = make_user("bob")
    bob.groups.add(Group.objects.create(name="approvers"))
    secret = {"script": "t_echo", "params": {"secret": "salary-4711"}}
    approval = {"script": "t_approve_hidden", "params": {"assign_to": "approvers"}}
    flow = api.start_flow(api.create_routine("hidden", [secret, approval], owner=user), user)
    assert flow.state == "waiting"
    client.force_login(user)
    owner_sees = page(client, flow)
    assert owner_sees.count("salary-4711") >= 2  # in the results and in the timeline
    client.force_login(bob)
    assignee_sees = page(client, flow)
    assert 'id="flow-event-1"' in assignee_sees and "salary-4711" not in assignee_sees


def test_the_time_zone_is_part_of_what_is_kept(user, routine):
    """Noon in UTC: the same day in Tokyo, so only the zone tells the two apart."""
    with time_machine.travel(datetime(2026, 6, 1, 12, 0, tzinfo=UTC), tick=False):
        api.start_flow(routine("t_echo"), user)
        events = list(FlowEvent.objects.select_related("actor").order_by("seq")[:1])
        with timezone.override("UTC"):
            utc = timeline.flow_items(events, True)[0]
        with timezone.override("Asia/Tokyo"):
            tokyo = timeline.flow_items(events, True)[0]
    assert "2026-06-01 12:00:00" in utc and "2026-06-01 21:00:00" in tokyo


def test_a_run_page_renders_each_event_once_and_follows_its_history_window(client, user):
    """An LTM run's event log the same way; an event the time machine no longer reaches
    (before `history_from`) loses its link to the run as it was then."""
    from engine.models import LtmEvent, LtmRun

    run_id = api.start_ltm("my_ltm", user)
    client.force_login(user)
    url = reverse("studio:ltm_run", args=[run_id])
    seqs = sorted(LtmEvent.objects.filter(run=run_id).values_list("seq", flat=True))
    assert len(seqs) >= 2

    def rendered() -> tuple[list[int], str]:
        with items_rendered(timeline.LTM_EVENT) as seen:
            response = client.get(url)
        assert response.status_code == 200
        return sorted(seen), response.content.decode()

    first, html = rendered()
    assert first == seqs and f'href="{url}?at={seqs[0]}"' in html
    again, html = rendered()
    assert again == [] and f'href="{url}?at={seqs[0]}"' in html
    LtmRun.objects.filter(pk=run_id).update(history_from=seqs[1])
    moved, html = rendered()
    assert moved == [seqs[0]]  # only the item whose link goes
    assert f'href="{url}?at={seqs[0]}"' not in html and f'href="{url}?at={seqs[1]}"' in html
