"""The studio's template helpers that pages use on every row and event: a state's badge, and
moments written as Django's `date` filter writes them (in the page's time zone), directly."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.template import engines
from django.utils import timezone

from studio.templatetags.studio_tags import STATE_ICONS

DJANGO = engines["django"]
MOMENTS = [
    datetime(2026, 12, 7, 23, 59, 58, 123456, tzinfo=UTC),  # the next day in Tokyo
    datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC),
    datetime(2026, 6, 30, 12, 5, 9),  # naive: as it is
]


def render(source: str, **context: object) -> str:
    return DJANGO.from_string("{% load studio_tags %}" + source).render(context)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Tokyo", "America/St_Johns"])
@pytest.mark.parametrize("moment", MOMENTS)
def test_moments_read_as_the_date_filter_writes_them(zone, moment):
    with timezone.override(zone):
        assert render("{{ m|iso }}", m=moment) == render("{{ m|date:'c' }}", m=moment)
        assert render("{{ m|stamp }}", m=moment) == render('{{ m|date:"Y-m-d H:i:s" }}', m=moment)


def test_a_moment_is_written_in_the_pages_time_zone():
    moment = MOMENTS[0]
    with timezone.override("Asia/Tokyo"):
        assert render("{{ m|iso }} {{ m|stamp }}", m=moment) == (
            "2026-12-08T08:59:58.123456+09:00 2026-12-08 08:59:58"
        )


@pytest.mark.parametrize(
    "value", [None, "", "2026-12-07T10:00:00Z", 3, MOMENTS[0].date(), MOMENTS[0].timetz()]
)
def test_what_is_not_a_moment_is_written_as_nothing(value):
    assert render("[{{ v|iso }}][{{ v|stamp }}]", v=value) == "[][]"


@pytest.mark.parametrize(
    ("state", "label", "shown"),
    [("waiting", "Waiting for input", "Waiting for input"), ("complete", "", "Complete")],
)
def test_a_state_badge_shows_its_icon_and_its_name(state, label, shown):
    assert render("{% state_badge s l %}", s=state, l=label) == (
        f'<span class="state state-{state}"><span class="icon" aria-hidden="true">'
        f"{STATE_ICONS[state]}</span> {shown}</span>"
    )


def test_a_state_badge_escapes_what_it_shows():
    html = render("{% state_badge s l %}", s='x" onclick="alert(1)', l="<b>bold</b>")
    assert "<b>" not in html and 'x" onclick' not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "x&quot; onclick" in html


def test_a_flow_states_badge_names_it_by_its_label(monkeypatch):
    from studio.templatetags import studio_tags

    assert studio_tags.FLOW_STATE_LABELS["retrying"] == "Retrying"
    monkeypatch.setitem(studio_tags.FLOW_STATE_LABELS, "retrying", "Retrying later")
    assert "</span> Retrying later</span>" in render("{% state_badge s %}", s="retrying")
    assert "</span> Queued</span>" in render("{% state_badge s %}", s="queued")  # not a flow's
