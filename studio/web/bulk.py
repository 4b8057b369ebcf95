"""What the dashboard's bulk actions show, from the signed-in user and plain arguments (never
a request), as `studio.web.pages` does for the other pages: the form of the dashboard's
action bar (the ticked flows, or every flow matching the list's filter; the action; a
reason), the preview of a bulk action (how many flows of each state it applies to, which it
refuses and why) with its confirmation, and a bulk action's progress and summary. The live
updates render the same progress partial (`PROGRESS`). Everything here reaches the engine
through `engine.api`."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, QueryDict
from django.urls import reverse

from engine import api
from engine.models import BulkAction, Routine
from studio.web.forms import TextField

PROGRESS = "studio/partials/_bulk_progress.html"
PREVIEW = "studio/partials/_bulk_preview.html"

# The actions of the action bar, as it offers them.
ACTIONS = {
    "retry": "Retry",
    "resume": "Resume",
    "skip": "Skip the current step",
    "kill": "Kill",
}
# What the confirmation's button says before "N flows".
CONFIRM = {
    "retry": "Retry",
    "resume": "Resume",
    "skip": "Skip the current step of",
    "kill": "Kill",
}
# The dashboard's query parameters that make its filter (`engine.api.parse_filter`).
FILTER_PARAMS = ("state", "routine", "owner", "q")
FIRST_SHOWN = 10  # refused flows linked per reason in the progress (the count has them all)


class IdsField(forms.Field):
    """The ticked flows: every `ids` value posted, each a flow number."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[int]:
        if not value:
            return []
        values = value if isinstance(value, list | tuple) else [value]
        ids = []
        for item in values:
            number = api.parse_id(item) if isinstance(item, str) else None
            if not number:
                raise forms.ValidationError("The selected flows must be flow numbers.")
            ids.append(number)
        if len(ids) > api.MAX_BULK_FLOWS:
            raise forms.ValidationError(
                f"{len(ids):,} flows selected: a bulk action takes at most {api.MAX_BULK_FLOWS:,}."
            )
        return ids


class BulkForm(forms.Form):
    """The action bar of the dashboard and the confirmation of its preview: which flows —
    the ticked `ids`, or `all` those matching the list's filter (its query parameters,
    posted along) — the action, and a reason (required to confirm)."""

    action = forms.ChoiceField(choices=list(ACTIONS.items()), label="Action")
    reason = TextField(max_length=500, required=False, label="Reason")
    ids = IdsField(required=False)
    all = forms.BooleanField(required=False, label="Every flow matching this filter")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and not data.get("all") and not data.get("ids"):
            raise forms.ValidationError(
                "Select some flows first: tick them, or select every flow matching the filter."
            )
        return data

    @property
    def flow_filter(self) -> api.FlowFilter:
        return api.parse_filter(self.data)

    @property
    def selection(self) -> dict[str, Any]:
        """What is selected, as `engine.api.preview_bulk` and `start_bulk` take it."""
        if self.cleaned_data.get("all"):
            return {"filter": self.flow_filter.as_json()}
        return {"ids": self.cleaned_data["ids"]}

    @property
    def first_error(self) -> str:
        for errors in self.errors.values():
            return str(errors[0])
        return ""


def filter_fields(flow_filter: api.FlowFilter) -> list[tuple[str, Any]]:
    """A list's filter as the hidden fields of a form (the dashboard's query parameters)."""
    values = {
        "state": flow_filter.state,
        "routine": flow_filter.routine,
        "owner": flow_filter.owner,
        "q": flow_filter.search,
    }
    return [(name, value) for name, value in values.items() if value not in ("", None)]


def filter_words(flow_filter: api.FlowFilter) -> str:
    """The filter in words: "state failed, routine Invoices, search “acme”"."""
    words = []
    if flow_filter.state:
        words.append(f"state {flow_filter.state}")
    if flow_filter.routine is not None:
        routine = Routine.objects.filter(pk=flow_filter.routine).only("name").first()
        words.append(f"routine {routine.name if routine else flow_filter.routine}")
    if flow_filter.owner is not None:
        words.append(f"owner {flow_filter.owner}")
    if flow_filter.search:
        words.append(f"search “{flow_filter.search}”")
    return ", ".join(words)


def bar(user: Any, chosen: dict[str, Any], counted: api.FlowCount) -> dict[str, Any]:
    """The dashboard's action bar: the actions, the list's filter as hidden fields, and
    "select every flow matching this filter" when a filter is on (as many flows as
    `counted` says: more when the count stopped at its limit, about as many when it is the
    database's estimate; more than a bulk action takes is said so)."""
    flow_filter: api.FlowFilter = chosen["filter"]
    return {
        "actions": list(ACTIONS.items()),
        "filter_fields": filter_fields(flow_filter),
        "filtered": flow_filter.active,
        "matching": counted.count,
        "matching_text": counted.text,
        "capped": counted.capped,
        # More than a bulk action takes: counted past the limit, or (not counted) expected
        # to be. Under it, an estimate may still be short: the preview counts, and refuses
        # a selection past the limit with a message saying so (`engine.api.preview_bulk`).
        "too_many": (
            counted.estimate > api.MAX_BULK_FLOWS
            if counted.estimate is not None
            else counted.capped or counted.count > api.MAX_BULK_FLOWS
        ),
        "max_flows": api.MAX_BULK_FLOWS,
        "max_flows_text": f"{api.MAX_BULK_FLOWS:,}",
    }


def back_to_list(form: BulkForm) -> str:
    """The dashboard as the action bar's list showed it (its filter)."""
    query = QueryDict(mutable=True)
    for name, value in filter_fields(form.flow_filter):
        query[name] = str(value)
    text = query.urlencode()
    return reverse("studio:dashboard") + (f"?{text}" if text else "")


def preview(user: Any, form: BulkForm, error: str = "") -> tuple[dict[str, Any], int]:
    """The preview of the posted bulk action (`PREVIEW`) and its status: how many of the
    selected flows of each state it applies to, which it refuses and why, and the form that
    confirms it with a reason; or what is wrong with the request (400, 403)."""
    context: dict[str, Any] = {"form": form, "error": error, "preview": None}
    if form.is_bound and not form.is_valid():
        context["error"] = error or form.first_error
        context["back"] = back_to_list(form)
        return context, 400
    action = form.cleaned_data["action"]
    context.update(
        action=action,
        title=ACTIONS[action],
        confirm=CONFIRM[action],
        verb=api.BULK_ACTIONS[action],
        destructive=action == "kill",
        back=back_to_list(form),
        reason=form.cleaned_data.get("reason", ""),
        ids=form.cleaned_data["ids"] if not form.cleaned_data.get("all") else [],
        everything=bool(form.cleaned_data.get("all")),
        filter_fields=filter_fields(form.flow_filter),
        filter_words=filter_words(form.flow_filter),
    )
    try:
        found = api.preview_bulk(user, action, form.selection)
    except ValueError as exc:
        context["error"] = str(exc)
        return context, 400
    except PermissionDenied as exc:
        context["error"] = str(exc) or "You may not do this."
        return context, 403
    context.update(
        preview=found,
        affected=[
            {"state": state, "label": api.FlowState(state).label, "count": count}
            for state, count in sorted(found.affected.items(), key=lambda item: -item[1])
        ],
        refused=api.refusals_out(found.refused),
    )
    return context, 400 if error else 200


def get_bulk(user: Any, pk: int) -> BulkAction:
    """A bulk action of `user`'s; 404 for any other (another user's reads as missing)."""
    bulk = api.visible_bulk_actions(user).defer("flow_ids").filter(pk=pk).first()
    if bulk is None:
        raise Http404("no such bulk action")
    return bulk


def progress(user: Any, bulk: BulkAction) -> dict[str, Any]:
    """A bulk action's progress (`PROGRESS`): processed of total, how many it applied to
    and refused (by reason, the first flows of each linked when `user` may see them), and,
    once it ended, its summary."""
    refused = api.refusals_out(bulk.refused if isinstance(bulk.refused, dict) else {})
    named = {pk for row in refused for pk in row["flows"][:FIRST_SHOWN]}
    seen = set(api.visible_flows(user).filter(pk__in=named).values_list("pk", flat=True))
    for row in refused:
        row["shown"] = [{"id": pk, "link": pk in seen} for pk in row["flows"][:FIRST_SHOWN]]
        row["more"] = row["count"] - len(row["shown"])
    running = bulk.state in (BulkAction.QUEUED, BulkAction.RUNNING)
    return {
        "bulk": bulk,
        "title": ACTIONS.get(bulk.action, bulk.action),
        "verb": api.BULK_ACTIONS.get(bulk.action, bulk.action),
        "refused": refused,
        "refused_count": sum(row["count"] for row in refused),
        "running": running,
        "done": bulk.state == BulkAction.DONE,
        "percent": round(100 * bulk.processed / bulk.total) if bulk.total else 100,
        "selection": _selection_words(bulk),
        "took": _took(bulk),
    }


def _took(bulk: BulkAction) -> str:
    """How long it ran: "4.2 s", "3 min 5 s"."""
    if bulk.finished is None or bulk.created is None:
        return ""
    seconds = max(0.0, (bulk.finished - bulk.created).total_seconds())
    if seconds < 0.1:
        return "under 0.1 s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _selection_words(bulk: BulkAction) -> str:
    selection = bulk.selection if isinstance(bulk.selection, dict) else {}
    plural = "s" if bulk.total != 1 else ""
    if "filter" in selection:
        try:
            flow_filter = api.filter_from_json(selection["filter"])
        except ValueError:
            return "the flows matching a filter"
        return f"{bulk.total} flow{plural} matching {filter_words(flow_filter)}"
    return f"{bulk.total} selected flow{plural}"


def bulk_list(user: Any, params: QueryDict) -> dict[str, Any]:
    """The user's bulk actions, newest first, fifty a page."""
    bulk_actions = api.visible_bulk_actions(user).defer("flow_ids", "selection")
    page = Paginator(bulk_actions, 50).get_page(params.get("page"))
    rows = [
        {
            "bulk": bulk,
            "title": ACTIONS.get(bulk.action, bulk.action),
            "refused": sum(
                int(entry.get("count", 0))
                for entry in (bulk.refused if isinstance(bulk.refused, dict) else {}).values()
                if isinstance(entry, dict)
            ),
        }
        for bulk in page.object_list
    ]
    return {"title": "Bulk actions", "page": page, "rows": rows}
