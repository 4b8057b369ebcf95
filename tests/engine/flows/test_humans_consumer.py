"""Deadlines and notifications of human steps on real consumer processes: the consumers'
housekeeping fires a deadline within seconds of it passing, exactly once however many
consumers run (the scale-out pass runs three), performs `on_timeout()` once, and e-mails each
assignee once per wait; input that arrives first wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from engine import api
from engine.flows.status import ACTIVE
from engine.models import Flow, FlowEvent, Notification
from tests.conftest import wait_until

pytestmark = pytest.mark.consumer


def start(user, script, params):
    routine = api.create_routine("human", [script], owner=user)
    step = routine.steps.get()
    step.params = params
    step.save()
    return api.start_flow(routine, user)


def messages(folder: Path) -> list[str]:
    """The e-mails the file backend wrote (one file per connection, messages split by a
    line of dashes)."""
    found = []
    for path in folder.glob("*.log"):
        found += [part for part in path.read_text().split("-" * 79) if "Subject:" in part]
    return found


@pytest.fixture
def mailbox(engine_queue, tmp_path):
    """Start the consumers with e-mail written to files in a folder of this test."""
    folder = tmp_path / "mail"
    folder.mkdir()
    consumer = engine_queue
    consumer.env.update(
        DJANGO_EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        DJANGO_EMAIL_FILE_PATH=str(folder),
    )
    consumer.start()
    return folder


def test_deadlines_fire_once_each_on_the_consumers_and_input_first_wins(consumer, user):
    flows = [start(user, "t_times_out", {"timeout": 1}) for _ in range(6)]
    answered = start(user, "t_times_out", {"timeout": 4})
    assert wait_until(lambda: Flow.objects.get(pk=answered.pk).state == "waiting", timeout=30)
    api.push_input(answered, {"answer": "in time"}, user)

    def settled() -> bool:  # (a flow whose deadline fired runs on_timeout() before it ends)
        return not Flow.objects.filter(pk__in=[f.pk for f in flows], state__in=ACTIVE).exists()

    assert wait_until(settled, timeout=60), consumer.logs()[-3000:]
    for flow in flows:
        flow.refresh_from_db()
        assert flow.state == "complete" and flow.results == ["timed out"], flow.error
        assert FlowEvent.objects.filter(flow=flow, kind="step.timed_out").count() == 1
    performed = consumer.performed()
    for flow in flows:
        assert performed[(flow.pk, 0, "t_times_out")] == 1  # on_timeout() ran once
    assert wait_until(lambda: Flow.objects.get(pk=answered.pk).state == "complete", timeout=30)
    assert not FlowEvent.objects.filter(flow=answered, kind="step.timed_out").exists()


def test_each_assignee_is_emailed_once_per_wait_by_the_consumers(mailbox, engine_queue, make_user):
    consumer = engine_queue
    group = Group.objects.create(name="approvers")
    people = [make_user(f"approver{n}", email=f"a{n}@example.com") for n in range(3)]
    for person in people:
        person.groups.add(group)
    owner = make_user("owner", email="owner@example.com")
    flows = [start(owner, "t_approve", {"assign_to": "approvers"}) for _ in range(4)]

    def all_sent() -> bool:
        return not Notification.objects.filter(emailed__isnull=True).exists()

    assert wait_until(all_sent, timeout=60), consumer.logs()[-3000:]
    assert wait_until(lambda: len(messages(mailbox)) >= 12, timeout=30), consumer.logs()[-3000:]
    sent = messages(mailbox)
    assert len(sent) == 12  # 4 waits x 3 approvers, each once
    for flow in flows:
        assert sum(f"/flows/{flow.pk}/" in m for m in sent) == 3
    assert not any("owner@example.com" in m for m in sent)  # assigned: the owner is not told
    assert Notification.objects.filter(email_error="").count() == 12
