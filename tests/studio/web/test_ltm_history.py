"""The history control of an LTM run's page through the Django test client: the run as it was
after an event (its statuses, global state and diagram), rollback and copy from there with
their confirmations, and how every refusal answers (4xx with the message, never a 500)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from engine import api
from engine.models import LtmEvent, LtmExecution, LtmRun
from tests.engine.ltm.support import django_runtime, statuses  # noqa: F401  (autouse fixture)

pytestmark = pytest.mark.django_db(transaction=True)
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def client_alice(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def pairs(user):
    """A flou_pairs run: started (first_1 and first_2 active), then `next_1` fired (second_1
    entered). Returns (run id, the seq right after the start, the seq now)."""
    run_id = api.start_ltm("flou_pairs", user)
    started = LtmRun.objects.get(pk=run_id).seq
    api.fire_transition(run_id, "next_{k}", user, params=[{"k": "1"}])
    return run_id, started, LtmRun.objects.get(pk=run_id).seq


def at_url(run_id, seq):
    return reverse("studio:ltm_run_at", args=[run_id, seq])


def rollback_url(run_id, seq):
    return reverse("studio:ltm_run_rollback", args=[run_id, seq])


def copy_url(run_id, seq):
    return reverse("studio:ltm_run_copy", args=[run_id, seq])


def past_states(html: str) -> dict[str, str]:
    """The past view's states table: fqn -> the status word shown."""
    table = html.split('id="past-states"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr data-fqn="([^"]+)">.*?class="state state-([a-z]+)"', table, re.S)
    return dict(rows)


# --- viewing the past ---------------------------------------------------------------------


def test_viewing_an_event_shows_the_run_as_it_was_then(client_alice, user, pairs):
    run_id, started, now = pairs
    assert statuses(run_id)["flou_pairs.second_1"] == "active"

    html = client_alice.get(at_url(run_id, started), **HTMX).content.decode()
    assert f"Viewing the run as it was after event {started} of" in html
    assert f"<span data-history-now>{now}</span>" in html
    assert "flou_pairs.second_1" not in past_states(html)  # not entered yet then
    assert past_states(html)["flou_pairs.first_1"] == "active"
    assert "<svg" in html and "Back to now" in html
    assert 'id="ltm-past" class="ltm-past viewing"' in html
    # The kind and time of the event viewed are named.
    event = LtmEvent.objects.get(run_id=run_id, seq=started)
    assert f"({event.kind}" in html

    # Now: second_1 is there and first_1 completed.
    latest = client_alice.get(at_url(run_id, now), **HTMX).content.decode()
    assert past_states(latest)["flou_pairs.second_1"] == "active"
    assert past_states(latest)["flou_pairs.first_1"] == "completed"
    assert 'id="history-rollback"' not in latest  # nothing to roll back at the latest event


def test_the_run_page_shows_the_past_without_htmx_and_the_slider_by_default(client_alice, pairs):
    run_id, started, now = pairs
    page = client_alice.get(reverse("studio:ltm_run", args=[run_id])).content.decode()
    # The page is "now": the slider at the last event, the past area empty.
    assert '<div id="ltm-past" class="ltm-past"></div>' in page
    assert f'name="at" min="1" max="{now}" step="1" value="{now}"' in page
    assert f'href="/ltm-runs/{run_id}/?at={started}"' in page  # the log's events link back

    html = client_alice.get(reverse("studio:ltm_run", args=[run_id]), {"at": started})
    assert html.status_code == 200
    text = html.content.decode()
    assert "<!doctype html>" in text  # the whole page, with the live area after the past view
    assert f"Viewing the run as it was after event {started} of" in text
    assert 'id="ltm-run-live"' in text
    assert "flou_pairs.second_1" not in past_states(text)
    # With htmx, the same address answers the past view alone (the slider's form).
    partial = client_alice.get(reverse("studio:ltm_run", args=[run_id]), {"at": started}, **HTMX)
    assert partial.content.decode().lstrip().startswith('<div id="ltm-past"')


@pytest.mark.parametrize("htmx", [True, False])
def test_a_seq_out_of_range_is_400_naming_the_range(client_alice, pairs, htmx):
    run_id, _, now = pairs
    headers = HTMX if htmx else {}
    for response in (
        client_alice.get(at_url(run_id, now + 1), **headers),
        client_alice.get(at_url(run_id, 0), **headers),
        client_alice.get(reverse("studio:ltm_run", args=[run_id]), {"at": "x"}, **headers),
        client_alice.get(rollback_url(run_id, now + 5), **headers),
    ):
        assert response.status_code == 400
        assert f"1 to {now}" in response.content.decode()


def test_another_users_run_is_404(client, make_user, pairs):
    run_id, started, now = pairs
    client.force_login(make_user("mallory"))
    assert client.get(at_url(run_id, started), **HTMX).status_code == 404
    assert client.get(reverse("studio:ltm_run", args=[run_id]), {"at": started}).status_code == 404
    assert client.get(rollback_url(run_id, started), **HTMX).status_code == 404
    answer = client.post(rollback_url(run_id, started), {"reason": "x", "expected_seq": now})
    assert answer.status_code == 404
    assert client.post(copy_url(run_id, started)).status_code == 404
    assert LtmRun.objects.get(pk=run_id).seq == now
    assert LtmRun.objects.count() == 1


def test_staff_may_look_at_and_operate_anothers_run(client, make_user, pairs):
    run_id, started, _ = pairs
    client.force_login(make_user("root", is_staff=True))
    html = client.get(at_url(run_id, started), **HTMX).content.decode()
    assert 'id="history-rollback"' in html and 'id="history-copy"' in html


# --- confirmations ------------------------------------------------------------------------


def test_the_confirmations_say_what_will_happen(client_alice, pairs):
    run_id, started, now = pairs
    html = client_alice.get(rollback_url(run_id, started), {"seen": now}, **HTMX)
    text = html.content.decode()
    assert html.status_code == 200
    assert f"The run goes back to how it was after event {started}" in text
    assert "executions queued then are queued again" in text
    assert "the rollback can itself be rolled back" in text
    assert f'name="expected_seq" value="{now}"' in text
    assert 'name="discard_running"' not in text  # nothing executes now
    copy = client_alice.get(copy_url(run_id, started), **HTMX).content.decode()
    assert f"A new run of flou_pairs owned by you starts from event {started}" in copy
    assert "the original is untouched" in copy
    # Without htmx: the run's page, with the past view and the confirmation open.
    page = client_alice.get(rollback_url(run_id, started), {"seen": now}).content.decode()
    assert "<!doctype html>" in page and 'id="history-confirm-rollback"' in page
    assert f"Viewing the run as it was after event {started}" in page


def test_a_confirmation_for_a_run_that_moved_on_says_so(client_alice, pairs):
    run_id, started, now = pairs
    html = client_alice.get(rollback_url(run_id, started), {"seen": started}, **HTMX)
    text = html.content.decode()
    assert f"The run moved on to event {now}" in text
    assert f'name="expected_seq" value="{started}"' in text


# --- rollback -----------------------------------------------------------------------------


def test_rollback_takes_the_run_back_and_records_the_reason(client_alice, user, pairs):
    run_id, started, now = pairs
    response = client_alice.post(
        rollback_url(run_id, started),
        {"reason": "undo <next_1>", "expected_seq": now},
        **HTMX,
    )
    assert response.status_code == 200
    html = response.content.decode()
    # The past view closes and the live area shows the run now (out of band).
    assert html.lstrip().startswith('<div id="ltm-past" class="ltm-past"><p class="notice ok"')
    assert 'id="ltm-run-live"' in html and 'hx-swap-oob="true"' in html
    assert f"Rolled back to event {started}." in html
    assert "undo &lt;next_1&gt;" in html and "undo <next_1>" not in html  # escaped
    assert "flou_pairs.second_1" not in statuses(run_id)
    event = LtmEvent.objects.filter(run_id=run_id, kind="rollback").get()
    assert event.actor == user and event.data["reason"] == "undo <next_1>"
    assert event.data["to"] == started
    assert event.seq > now  # the events after it stay in the history

    # The rollback is an event like the others: it can be looked at, and rolled back too.
    run = LtmRun.objects.get(pk=run_id)
    assert client_alice.get(at_url(run_id, run.seq), **HTMX).status_code == 200
    again = client_alice.post(
        rollback_url(run_id, now), {"reason": "redo", "expected_seq": run.seq}
    )
    assert again.status_code == 302 and again["Location"] == f"/ltm-runs/{run_id}/"
    assert statuses(run_id)["flou_pairs.second_1"] == "active"
    page = client_alice.get(again["Location"]).content.decode()
    assert f"Rolled back to event {now}." in page  # the message after the redirect
    assert "Back to how the run was after event" in page  # the log says what it did


def test_rollback_without_a_reason_is_400_and_changes_nothing(client_alice, pairs):
    run_id, started, now = pairs
    for headers in (HTMX, {}):
        response = client_alice.post(
            rollback_url(run_id, started), {"reason": "  ", "expected_seq": now}, **headers
        )
        assert response.status_code == 400
        html = response.content.decode()
        assert 'id="history-reason-errors"' in html and 'aria-invalid="true"' in html
    assert LtmRun.objects.get(pk=run_id).seq == now
    assert statuses(run_id)["flou_pairs.second_1"] == "active"


def test_rollback_of_a_run_that_moved_on_is_409_and_changes_nothing(client_alice, pairs):
    run_id, started, now = pairs
    response = client_alice.post(
        rollback_url(run_id, started), {"reason": "late", "expected_seq": now - 1}, **HTMX
    )
    assert response.status_code == 409
    html = response.content.decode()
    assert f"moved on to event {now}" in html and "Look again" in html
    # The page's event number is kept: resubmitting as it is fails again.
    assert f'name="expected_seq" value="{now - 1}"' in html
    assert LtmRun.objects.get(pk=run_id).seq == now
    assert not LtmEvent.objects.filter(run_id=run_id, kind="rollback").exists()


def test_rollback_while_a_state_executes_needs_the_discard_box(client_alice, pairs):
    run_id, started, now = pairs
    LtmExecution.objects.filter(run_id=run_id, fqn="flou_pairs.second_1").update(status="claimed")

    confirm = client_alice.get(rollback_url(run_id, started), **HTMX).content.decode()
    assert "flou_pairs.second_1 is executing now" in confirm
    assert 'name="discard_running"' in confirm
    assert "Discard the outcome of the running execution" in confirm

    refused = client_alice.post(
        rollback_url(run_id, started), {"reason": "r", "expected_seq": now}, **HTMX
    )
    assert refused.status_code == 409
    assert "is executing now" in refused.content.decode()
    assert LtmRun.objects.get(pk=run_id).seq == now

    done = client_alice.post(
        rollback_url(run_id, started),
        {"reason": "r", "expected_seq": now, "discard_running": "on"},
        **HTMX,
    )
    assert done.status_code == 200
    event = LtmEvent.objects.filter(run_id=run_id, kind="rollback").get()
    assert event.data["discarded"] == ["flou_pairs.second_1"]


def test_a_killed_run_cannot_be_rolled_back_but_can_be_copied(client_alice, user, pairs):
    run_id, started, _ = pairs
    api.kill_ltm(run_id, user, reason="stop")
    now = LtmRun.objects.get(pk=run_id).seq
    html = client_alice.get(at_url(run_id, started), **HTMX).content.decode()
    assert 'id="history-rollback"' not in html and 'id="history-copy"' in html
    response = client_alice.post(
        rollback_url(run_id, started), {"reason": "r", "expected_seq": now}, **HTMX
    )
    assert response.status_code == 409 and "was killed" in response.content.decode()


# --- copy ---------------------------------------------------------------------------------


def test_copy_redirects_to_a_new_run_owned_by_the_user(client, make_user, pairs, user):
    run_id, started, now = pairs
    client.force_login(user)
    response = client.post(copy_url(run_id, started))
    assert response.status_code == 302
    copy_id = response["Location"].rstrip("/").split("/")[-1]
    assert copy_id != run_id
    copy = LtmRun.objects.get(pk=copy_id)
    assert copy.owner == user and copy.name == "flou_pairs"
    assert "flou_pairs.second_1" not in statuses(copy_id)
    assert LtmRun.objects.get(pk=run_id).seq == now  # the original is untouched
    page = client.get(response["Location"]).content.decode()
    assert "run.copied" in page and "Copied from" in page
    assert f'href="/ltm-runs/{run_id}/?at={started}"' in page

    # Staff copying someone else's run own the copy; with htmx the answer is a redirect.
    client.force_login(make_user("root", is_staff=True))
    answer = client.post(copy_url(run_id, started), **HTMX)
    assert answer.status_code == 200 and answer["HX-Redirect"].startswith("/ltm-runs/")
    staff_copy = LtmRun.objects.get(pk=answer["HX-Redirect"].rstrip("/").split("/")[-1])
    assert staff_copy.owner.username == "root"


# --- CSRF, methods ------------------------------------------------------------------------


def test_posts_need_the_csrf_token(user, pairs):
    run_id, started, now = pairs
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    refused = strict.post(rollback_url(run_id, started), {"reason": "r", "expected_seq": now})
    assert refused.status_code == 403
    assert strict.post(copy_url(run_id, started)).status_code == 403
    assert LtmRun.objects.get(pk=run_id).seq == now
    assert LtmRun.objects.count() == 1

    # With the token from the confirmation the page showed, the same POST is done.
    page = strict.get(rollback_url(run_id, started), {"seen": now}).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    done = strict.post(
        rollback_url(run_id, started),
        {"reason": "r", "expected_seq": now, "csrfmiddlewaretoken": token},
    )
    assert done.status_code == 302


def test_the_past_view_is_read_only_by_get(client_alice, pairs):
    run_id, started, _ = pairs
    assert client_alice.post(at_url(run_id, started)).status_code == 405
    assert client_alice.put(rollback_url(run_id, started)).status_code == 405


# --- the live fragment ----------------------------------------------------------------------


def test_the_live_fragment_renders_rollback_copy_and_stored_events(user, pairs):
    """What the websocket pushes to every other watcher after a rollback (and for the copy's
    and the store's own event kinds): the live area of the run as it is now."""
    from studio.live import fragments

    run_id, started, now = pairs
    api.rollback_ltm(run_id, started, user, "look <b>back</b>", expected_seq=now)
    run = LtmRun.objects.get(pk=run_id)
    rollback = LtmEvent.objects.get(run_id=run_id, kind="rollback")
    html = fragments.fragments(user, "ltm", run_id, {"seq": run.seq})["ltm-run-live"]
    assert f'data-seq="{run.seq}"' in html
    assert "look &lt;b&gt;back&lt;/b&gt;" in html and "<b>back</b>" not in html
    assert f'id="ltm-event-{rollback.seq}"' in html
    assert f'max="{run.seq}" step="1" value="{run.seq}"' in html  # the slider follows
    assert "flou_pairs.second_1" not in html.split('id="states-h"')[1].split("</table>")[0]

    copy_id = api.copy_ltm(run_id, user, seq=now)
    copy = LtmRun.objects.get(pk=copy_id)
    html = fragments.fragments(user, "ltm", copy_id, {"seq": copy.seq})["ltm-run-live"]
    assert "run.copied" in html and "Copied from" in html

    # A write with no event of its own is recorded as "state.stored": shown like any other.
    stored = LtmEvent.objects.create(
        run=copy, seq=copy.seq + 1, kind="state.stored", state="complete"
    )
    LtmRun.objects.filter(pk=copy_id).update(seq=stored.seq)
    html = fragments.fragments(user, "ltm", copy_id, {"seq": stored.seq})["ltm-run-live"]
    assert f'id="ltm-event-{stored.seq}"' in html and "state.stored" in html
