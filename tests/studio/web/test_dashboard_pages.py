"""The dashboard over many flows: keyset pages ("Newer" / "Older" links naming a place in the
list, never an offset) that neither repeat nor skip a flow when flows change between page
loads, a count that stops at a limit ("10,000+ flows"), the same number of queries however
many flows there are, and `#17` finding that flow only."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from engine import api
from engine.flows.queries import planned_rows
from engine.models import Flow
from studio.web import pages
from tests.conftest import bearer
from tests.engine.flows.test_bulk import make_flows

pytestmark = pytest.mark.django_db(transaction=True)
DASHBOARD = reverse("studio:dashboard")


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


def make_many(routine, owner, count: int, state: str = "complete") -> list[int]:
    """`count` flows, a third of them updated at the very same moment (ties: the id orders
    them), newest first as the dashboard lists them."""
    ids = make_flows(routine, owner, state, count)
    moment = timezone.now() - timedelta(hours=1)
    for index, pk in enumerate(ids):
        # Distinct times, except every third flow shares the one before it.
        Flow.objects.filter(pk=pk).update(updated=moment + timedelta(seconds=index - index % 3))
    return list(
        Flow.objects.filter(pk__in=ids).order_by("-updated", "-id").values_list("pk", flat=True)
    )


def shown(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="flow-(\d+)-row"', html)]


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'<a href="\?([^"]*)"[^>]*rel="{rel}"', html)
    return DASHBOARD + "?" + found.group(1).replace("&amp;", "&") if found else None


def walk(client, url: str = DASHBOARD) -> list[list[int]]:
    """Every page from `url`, by the "Older" links."""
    seen: list[list[int]] = []
    next_url: str | None = url
    while next_url:
        html = client.get(next_url).content.decode()
        seen.append(shown(html))
        next_url = link(html, "next")
    return seen


def test_older_links_walk_every_flow_once_in_order(alice, user, routine):
    r = routine("t_echo")
    order = make_many(r, user, 120)
    seen = walk(alice)
    assert [len(page) for page in seen] == [50, 50, 20]
    assert sum(seen, []) == order  # no flow twice, none skipped, ties ordered by id
    assert "offset" not in alice.get(DASHBOARD).content.decode()


def test_newer_links_go_back_and_the_top_is_the_full_first_page(alice, user, routine):
    r = routine("t_echo")
    order = make_many(r, user, 120)
    first = alice.get(DASHBOARD).content.decode()
    assert link(first, "prev") is None
    second = alice.get(link(first, "next")).content.decode()
    third = alice.get(link(second, "next")).content.decode()
    back = alice.get(link(third, "prev")).content.decode()
    assert shown(back) == order[50:100]
    top = alice.get(link(back, "prev")).content.decode()
    assert shown(top) == order[:50] and link(top, "prev") is None
    assert 'data-live-insert="true"' in top and 'data-live-insert="false"' in back
    # From a page near the top, "Newer" shows the whole first page (not a short one).
    near = alice.get(DASHBOARD + "?newer=" + api.cursor_of(Flow.objects.get(pk=order[10])))
    assert shown(near.content.decode()) == order[:50]


def test_a_flow_updated_between_page_loads_moves_to_the_top(alice, user, routine):
    """The behaviour: the next page continues after the last flow the page showed. A flow
    updated meanwhile moves to the top of the list (the first page shows it): it is neither
    shown again on an older page nor does it push another flow off one."""
    r = routine("t_echo")
    order = make_many(r, user, 120)
    first = alice.get(DASHBOARD).content.decode()
    seen_one, unseen = order[3], order[70]  # one on the first page, one on the second
    Flow.objects.filter(pk__in=[seen_one, unseen]).update(updated=timezone.now())
    Flow.objects.create(  # and a new flow
        routine=r, routine_version=1, steps=r.snapshot(), owner=user, state="pending"
    )
    second = shown(alice.get(link(first, "next")).content.decode())
    expected = [pk for pk in order[50:] if pk != unseen][:50]
    assert second == expected
    assert not set(second) & set(shown(first))
    top = shown(alice.get(DASHBOARD).content.decode())
    assert set(top[:3]) == {seen_one, unseen, Flow.objects.latest("id").pk}


def test_the_count_stops_at_its_limit(alice, user, routine, monkeypatch):
    r = routine("t_echo")
    make_flows(r, user, "failed", 8)
    make_flows(r, user, "killed", 3)
    monkeypatch.setattr(pages, "COUNT_LIMIT", 5)
    html = alice.get(DASHBOARD).content.decode()
    assert re.search(r'<p class="count"[^>]*data-capped="true"[^>]*>5\+ flows</p>', html)
    failed = alice.get(DASHBOARD + "?state=failed").content.decode()
    assert ">5+ flows</p>" in failed
    # "Select all" cannot say how many: it is off, and says why.
    assert re.search(r'id="bulk-all" disabled> Select all 5\+ flows matching', failed)
    killed = alice.get(DASHBOARD + "?state=killed").content.decode()
    assert ">3 flows</p>" in killed and "data-capped" not in killed
    assert "Select all 3 flows matching this filter" in killed


def test_the_count_says_10000_plus_past_the_bulk_limit(alice, user, routine, monkeypatch):
    monkeypatch.setattr(pages, "COUNT_LIMIT", 10_000)
    assert api.COUNT_LIMIT == api.MAX_BULK_FLOWS == 10_000
    r = routine("t_echo")
    flows = api.filter_flows(user, {})
    make_flows(r, user, "failed", 3)
    assert api.count_upto(flows, 2) == api.FlowCount(2, True)
    assert api.count_upto(flows, 3) == api.FlowCount(3)
    with CaptureQueriesContext(connection) as ctx:
        api.count_upto(flows, 10_000)
    (query,) = [q for q in ctx.captured_queries if not q["sql"].startswith("EXPLAIN")]
    assert "LIMIT 10001" in query["sql"].upper()  # counts no further than the limit


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.bothmodes
def test_the_number_of_queries_does_not_grow_with_the_flows(alice, user, other_user, routine):
    r = routine("t_echo")
    make_many(r, user, 3)
    make_flows(r, user, "waiting", 2)
    urls = [
        DASHBOARD,
        DASHBOARD + "?state=waiting",
        DASHBOARD + f"?routine={r.pk}",
        DASHBOARD + "?q=test",
        DASHBOARD + "?q=%231",
    ]
    few = [queries(alice, url) for url in urls]
    make_many(r, user, 150)
    make_flows(r, user, "waiting", 120)
    make_flows(r, other_user, "waiting", 60)
    many = [queries(alice, url) for url in urls]
    # A list its first page holds whole is not counted (its length is the count): one query
    # fewer, two on PostgreSQL (nor is its planner asked); `#1` is one flow either way. Past
    # one page, the same number however many flows.
    saved = 2 if connection.vendor == "postgresql" else 1
    assert [more - fewer for fewer, more in zip(few, many, strict=True)] == [saved] * 4 + [0]
    make_many(r, user, 100)
    assert [queries(alice, url) for url in urls] == many
    html = alice.get(DASHBOARD).content.decode()
    deep = alice.get(link(alice.get(link(html, "next")).content.decode(), "next"))
    assert len(shown(deep.content.decode())) == 50
    assert queries(alice, link(html, "next")) == many[0]


def test_hash_number_finds_that_flow_only(alice, user, routine):
    r = routine("t_echo", name="Routine 7")
    ids = make_flows(r, user, "waiting", 3)
    Flow.objects.filter(pk=ids[0]).update(wait_reason=f"order #{ids[1]}")
    assert shown(alice.get(DASHBOARD + f"?q=%23{ids[1]}").content.decode()) == [ids[1]]
    # A bare number matches the number and the texts.
    assert set(shown(alice.get(DASHBOARD + f"?q={ids[1]}").content.decode())) >= {ids[0], ids[1]}


@pytest.mark.usefixtures("fresh_rate_counts")
def test_the_api_pages_by_cursor_and_still_by_offset(user, routine, monkeypatch):
    client_api = bearer(user)
    r = routine("t_echo")
    order = make_many(r, user, 7)
    got: list[int] = []
    url = "/api/flows?limit=3"
    while url:
        page = client_api.get(url).json()
        assert (page["count"], page["count_capped"]) == (7, False)
        got += [item["id"] for item in page["items"]]
        url = f"/api/flows?limit=3&cursor={page['next']}" if page["next"] else ""
    assert got == order
    old = client_api.get("/api/flows?limit=3&offset=3").json()
    assert [item["id"] for item in old["items"]] == order[3:6] and old["offset"] == 3
    monkeypatch.setattr("engine.flows.queries.COUNT_LIMIT", 5)
    capped = client_api.get("/api/flows").json()
    assert (capped["count"], capped["count_capped"], capped["next"]) == (5, True, None)
    assert capped["count_estimate"] is None and page["count_estimate"] is None  # (counted)
    assert client_api.get("/api/flows?cursor=nonsense").json()["items"][0]["id"] == order[0]


@pytest.mark.bothmodes
def test_a_count_far_past_the_limit_is_not_made_where_the_planner_expects_it(user, routine):
    """PostgreSQL's planner expecting more than 3 times the limit: its estimate, said as one,
    without a count (a broad search counted its 10,001 matches row by row); nearer the
    limit, or on SQLite, whose planner does not tell, the flows are counted."""
    make_flows(routine("t_echo"), user, "failed", 40)
    flows = api.filter_flows(user, {})
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE engine_flow")  # (the statistics of the 40 flows)
        assert 20 < planned_rows(flows.order_by().values("pk")) < 80
    else:
        assert planned_rows(flows.order_by().values("pk")) == 0

    def counts(limit: int) -> tuple[api.FlowCount, list[str]]:
        with CaptureQueriesContext(connection) as ctx:
            answer = api.count_upto(flows, limit)
        return answer, [q["sql"] for q in ctx.captured_queries if "COUNT(" in q["sql"].upper()]

    answer, counted = counts(5)
    assert (answer.count, answer.capped) == (5, True)
    assert len(counted) == (0 if postgresql else 1)
    if postgresql:  # not counted: the planner's figure, to two significant figures
        assert answer.estimate is not None and 20 < answer.estimate < 80
        assert answer.estimate % 10 == 0 and answer.text == f"about {answer.estimate}"
    else:
        assert answer.estimate is None and answer.text == "5+"
    for limit, expected in (
        (39, api.FlowCount(39, True)),
        (40, api.FlowCount(40)),
        (100, api.FlowCount(40)),
    ):
        answer, counted = counts(limit)  # (within 3 times the limit: counted)
        assert answer == expected and len(counted) == 1
    # A search nothing stored can match (`none()`): nothing to plan, nothing counted.
    nothing = api.filter_flows(user, {"search": "x" * 10_000})
    assert api.count_upto(nothing, 5) == api.FlowCount(0)
    assert planned_rows(nothing.order_by().values("pk")) == 0


@pytest.mark.bothmodes
@pytest.mark.usefixtures("fresh_rate_counts")
def test_a_count_not_made_says_it_is_an_estimate(alice, user, routine, monkeypatch):
    """Where no count was made the list says about how many flows the database expects,
    never "N+" (which would claim more than N counted): its statistics can be wrong."""
    make_flows(routine("t_echo"), user, "failed", 60)  # more than a page: not counted by it
    monkeypatch.setattr(pages, "COUNT_LIMIT", 5)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE engine_flow")
    html = alice.get(DASHBOARD + "?state=failed").content.decode()
    count = re.search(r'<p class="count"([^>]*)>([^<]*)</p>', html)
    assert count is not None
    attributes, text = count.groups()
    assert 'data-capped="true"' in attributes  # (the live page leaves it as it is)
    if connection.vendor == "postgresql":
        assert re.fullmatch(r"about \d0 flows", text) and 'data-estimated="true"' in attributes
        assert 'title="Estimated from the database&#x27;s statistics: counting these' in html
        # (under the bulk limit: "select all" is on, its preview counts them)
        assert re.search(r'id="bulk-all"> Select all about \d0 flows matching this filter<', html)
        assert re.search(r'data-matching-text="about \d0"', html)
        assert "5+" not in text
    else:  # (SQLite's planner does not tell: counted)
        assert text == "5+ flows" and "data-estimated" not in attributes
        assert 'title="More than 5: the count stops there"' in html
    # The REST API says the same: the limit, capped, and the estimate where not counted.
    monkeypatch.setattr("engine.flows.queries.COUNT_LIMIT", 5)
    listed = bearer(user).get("/api/flows?state=failed&limit=10").json()
    assert (listed["count"], listed["count_capped"]) == (5, True)
    if connection.vendor == "postgresql":
        assert 20 < listed["count_estimate"] < 80 and listed["count_estimate"] % 10 == 0
    else:
        assert listed["count_estimate"] is None


@pytest.mark.bothmodes
def test_a_count_that_would_read_every_flow_of_a_big_table_is_not_made(user, routine):
    """A search too short for the trigram index is counted by reading the whole table: on
    PostgreSQL, past 3 times the limit of flows in the table, its matches are estimated, not
    counted, though fewer than the limit match; on a smaller table they are counted, in the
    same one statement. (SQLite counts them.)"""
    r = routine("t_echo")
    make_flows(r, user, "failed", 60)
    rare = make_flows(r, user, "waiting", 8)
    Flow.objects.filter(pk__in=rare).update(wait_reason="xy-9")
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE engine_flow")
    flows = api.filter_flows(user, {"search": "xy"})
    assert planned_rows(flows.order_by().values("pk")) <= (15 if postgresql else 0)

    def counts(limit: int) -> tuple[api.FlowCount, int]:
        with CaptureQueriesContext(connection) as ctx:
            answer = api.count_upto(flows, limit)
        return answer, len(ctx.captured_queries)

    answer, sent = counts(5)  # (68 flows in the table: more than 3 x 5)
    if postgresql:
        assert (answer.count, answer.capped) == (5, True) and answer.estimate is not None
        assert answer.estimate <= 15 and answer.text.startswith("about ")
        assert sent == 2  # the plan, and the statement that finds the table too big
    else:
        assert answer == api.FlowCount(5, True) and sent == 1
    answer, sent = counts(30)  # (68 flows: fewer than 3 x 30, counted)
    assert answer == api.FlowCount(8) and sent == (2 if postgresql else 1)


@pytest.mark.parametrize(
    ("flow_count", "text"),
    [
        (api.FlowCount(7), "7"),
        (api.FlowCount(10_000, True), "10,000+"),
        (api.FlowCount(10_000, True, estimate=52_000), "about 52,000"),
    ],
)
def test_what_a_count_says(flow_count, text):
    assert flow_count.text == text
    assert bool(flow_count.title) == flow_count.capped


def test_an_estimate_has_two_significant_figures():
    from engine.flows.queries import _two_figures

    assert [_two_figures(n) for n in (7, 45.4, 52_345, 1_049_999.7, 1_050_000, 99_999)] == [
        7,
        45,
        52_000,
        1_000_000,
        1_000_000,
        100_000,
    ]
