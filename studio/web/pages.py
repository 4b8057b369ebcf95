"""What each page of the studio shows, computed from the signed-in user and plain arguments
(never a request): the views render these contexts with the pages' templates, and the live
updates render the pages' own partial templates (`FLOW_LIVE`, `LTM_RUN_LIVE`, `FLOW_ROW`)
from the same functions. Everything here reaches the engine through `engine.api`."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import prefetch_related_objects
from django.http import Http404, QueryDict
from django.urls import reverse
from django.utils import timezone

from engine import api
from engine.models import Flow, LtmExecution, LtmRun, Routine
from studio.models import ApiToken
from studio.web import bulk, timeline
from studio.web.forms import (
    EDITABLE,
    REASONED,
    FieldsInputForm,
    FireTransitionForm,
    JSONInputForm,
    OverrideForm,
    RollbackLtmForm,
    RoutineForm,
    StepDraft,
    number_text,
    typed_input_form,
)

# The partial templates the live updates push, each the live area of its page.
FLOW_LIVE = "studio/partials/_flow_live.html"
LTM_RUN_LIVE = "studio/partials/_ltm_run_live.html"
FLOW_ROW = "studio/partials/_flow_row.html"
# A run page's past view (the run as it was after one event), the confirmation of a rollback
# or a copy from there, and what a rollback answers an htmx page (the past view closed and
# the live area as it is now).
LTM_RUN_PAST = "studio/partials/_ltm_run_past.html"
LTM_HISTORY_CONFIRM = "studio/partials/_ltm_history_confirm.html"
LTM_ROLLED_BACK = "studio/partials/_ltm_rolled_back.html"


# --- records a user may see ------------------------------------------------------------------


def visible_flow(user: Any, pk: int) -> Flow | None:
    return api.visible_flows(user).filter(pk=pk).first()


def get_flow(user: Any, pk: int) -> Flow:
    """A flow `user` may see; 404 otherwise (a foreign one is not revealed)."""
    flow = visible_flow(user, pk)
    if flow is None:
        raise Http404("no such flow")
    return flow


def seen_flow(user: Any, pk: int) -> Flow | None:
    """A flow whose page `user` may see (`engine.api.can_see_flow`): its owner, operators,
    and the assignees of its wait while it waits for them."""
    flow = api.read_flow(pk)
    return flow if flow is not None and api.can_see_flow(user, flow) else None


def get_seen_flow(user: Any, pk: int) -> Flow:
    """A flow's page, its live area and its input: 404 for whoever may not see the flow (the
    same answer as for a missing one). Overrides use `get_flow`: assignees may not override."""
    flow = seen_flow(user, pk)
    if flow is None:
        raise Http404("no such flow")
    return flow


def get_routine(user: Any, pk: int) -> Routine:
    """A routine `user` may see; 404 otherwise (a foreign one is not revealed)."""
    routine = api.visible_routines(user).filter(pk=pk).first()
    if routine is None:
        raise Http404("no such routine")
    return routine


def visible_run(user: Any, pk: Any) -> LtmRun | None:
    return api.visible_ltm_runs(user).filter(pk=pk).first()


def get_run(user: Any, pk: Any) -> LtmRun:
    """An LTM run `user` may see; 404 otherwise."""
    run = visible_run(user, pk)
    if run is None:
        raise Http404("no such LTM run")
    return run


# --- diagrams --------------------------------------------------------------------------------


def diagram(draw: Callable[[], str]) -> dict[str, str]:
    """{"svg": ...} or {"error": ...} for a template's diagram area."""
    try:
        return {"svg": draw()}
    except api.DiagramUnavailable as exc:
        return {"error": str(exc)}


def step_states(flow: Flow) -> list[str | None]:
    """The status each step of `flow` is drawn with."""
    states: list[str | None] = []
    for index in range(flow.length):
        complete = flow.state == api.FlowState.COMPLETE and index == flow.position
        if index < flow.position or complete:
            states.append("complete")
        elif index == flow.position:
            states.append(str(flow.state))
        else:
            states.append(None)
    return states


def flow_diagram(flow: Flow) -> dict[str, str]:
    """The flow's routine drawn with the current step highlighted and each step's status."""
    steps = [(s.get("name") or s["script"], s["script"]) for s in flow.steps]
    ended = flow.state in api.FINISHED and flow.state != api.FlowState.FAILED
    current = None if ended else flow.position
    return diagram(
        lambda: api.routine_diagram(steps, current, step_states(flow), title=flow.routine.name)
    )


def steps_diagram(title: str, drafts: list[StepDraft]) -> dict[str, str]:
    """The builder's preview of the steps being composed (nothing without steps)."""
    if not drafts:
        return {}
    known = api.scripts()
    steps = [(d.label or known.get(d.script, {}).get("label", d.script), d.script) for d in drafts]
    return diagram(lambda: api.routine_diagram(steps, title=title))


# --- the dashboard and "waiting for me" ------------------------------------------------------

PAGE_SIZE = 50
# The dashboard counts a list up to this many flows and says "10,000+" past it, or "about
# 52,000" where counting would read too many and the database's statistics estimate them
# (a bulk action takes at most as many: `engine.api.MAX_BULK_FLOWS`).
COUNT_LIMIT = api.COUNT_LIMIT
# The dashboard never loads the big per-flow columns it does not show.
_LIST_DEFER = ("data", "traceback", "input", "error")


def filtered_flows(user: Any, params: Any) -> tuple[Any, dict[str, Any]]:
    """The flows `user` may see narrowed by the dashboard's query parameters: the engine's
    one filter (`engine.api.filter_flows`), which the REST API and the bulk actions use too."""
    flow_filter = api.parse_filter(params)
    flows = api.filter_flows(user, flow_filter).defer(*_LIST_DEFER)
    return flows.order_by("-updated", "-id"), _chosen(params, flow_filter)


def narrow(flows: Any, user: Any, params: Any) -> tuple[Any, dict[str, Any]]:
    """`flows` narrowed by the query parameters of a list (state, routine, owner, a search:
    `engine.api.parse_filter`), and what was chosen."""
    flow_filter = api.parse_filter(params)
    return api.narrow_flows(flows, flow_filter), _chosen(params, flow_filter)


def _chosen(params: Any, flow_filter: api.FlowFilter) -> dict[str, Any]:
    """What a list's filter form shows as chosen."""
    return {
        "state": params.get("state", ""),
        "routine": flow_filter.routine,
        "owner": flow_filter.owner,
        "q": flow_filter.search,
        "filter": flow_filter,
    }


def _filters(user: Any, params: QueryDict) -> dict[str, Any]:
    """What a list's filter form offers, and its query without the page number."""
    query = params.copy()
    for name in ("page", "older", "newer"):
        query.pop(name, None)
    return {
        "query": query.urlencode(),
        "states": api.FlowState.choices,
        "routines": api.visible_routines(user).select_related(None).only("id", "name"),
        "owners": (
            get_user_model().objects.only("id", "username").order_by("username")[:200]
            if api.can_see_all(user)
            else []
        ),
    }


def dashboard(user: Any, params: QueryDict) -> dict[str, Any]:
    """The flows dashboard for the query parameters `params`: filters, search and a page of
    fifty rows after a cursor (`older`, `newer`: `engine.api.keyset_page`, never an offset),
    its count up to `COUNT_LIMIT` ("10,000+" past it; "about 52,000" where the flows are
    not counted but estimated: `engine.api.FlowCount`), and the bulk actions' bar
    (`studio.web.bulk`) when it lists any. A constant number of queries, however many flows."""
    flows, chosen = filtered_flows(user, params)
    page = api.keyset_page(flows, PAGE_SIZE, older=params.get("older"), newer=params.get("newer"))
    counted = api.count_listed(flows, page, COUNT_LIMIT) if page.flows else api.FlowCount(0)
    return {
        "title": "Flows",
        "page": page,
        "page_size": PAGE_SIZE,
        "counted": counted,
        "chosen": chosen,
        "bulk": bulk.bar(user, chosen, counted) if page.flows else None,
        **_filters(user, params),
    }


def cursor_of(flow: Flow) -> str:
    """The cursor of a dashboard link to the flows after `flow` (`?older=...`)."""
    return api.cursor_of(flow)


# Prefetched for `assigned_to` (the users and groups a wait is assigned to).
ASSIGNEES = ("assignees__user", "assignees__group")


def assigned_to(flow: Flow) -> dict[str, list[str]]:
    """The usernames and group names the flow's current wait is assigned to (empty lists
    when nobody is: then its owner answers)."""
    users: set[str] = set()
    groups: set[str] = set()
    if flow.state == api.FlowState.WAITING:
        prefetch_related_objects([flow], *ASSIGNEES)  # (nothing to do when prefetched)
        for row in flow.assignees.all():
            if row.user is not None:
                users.add(row.user.get_username())
            if row.group is not None:
                groups.add(row.group.name)
    return {"users": sorted(users), "groups": sorted(groups)}


def waiting(
    user: Any, params: QueryDict, *, answering: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The "Waiting for me" list: every flow waiting for `user` to answer (`engine.api.waiting_for`:
    as its owner or an assignee, directly or through a group), soonest deadline first, each
    row with its deadline and the form that answers it. `answering` holds, by flow id, a row
    as the user's answer left it (the bound form with its errors, a message)."""
    flows, chosen = narrow(api.waiting_for(user).defer(*_LIST_DEFER), user, params)
    page = Paginator(flows.prefetch_related(*ASSIGNEES), PAGE_SIZE).get_page(params.get("page"))
    answering = answering or {}
    rows = [answering.get(flow.pk) or waiting_row(flow) for flow in page.object_list]
    return {
        "title": "Waiting for me",
        "page": page,
        "rows": rows,
        "chosen": chosen,
        "refresh": _here("studio:waiting", params),
        **_filters(user, params),
    }


def _here(name: str, params: QueryDict) -> str:
    """The address of a list as it is shown (its filters and page), to fetch it again."""
    query = params.urlencode()
    return reverse(name) + (f"?{query}" if query else "")


def waiting_row(flow: Flow, form: Any = None, error: str = "") -> dict[str, Any]:
    """One row of "Waiting for me": the flow, whom it waits for, and its answer form (a
    bound `form` with the user's errors instead of a fresh one)."""
    return {
        "flow": flow,
        "form": form if form is not None else input_form_for(flow),
        "decision": api.is_decision(api.input_form_of(flow)),
        "assigned": assigned_to(flow),
        "error": error,
    }


def notifications(user: Any, params: QueryDict) -> dict[str, Any]:
    """The user's notifications, newest first, fifty a page: what waits (or waited) for
    them, open until the wait is answered or ends. A row links to its flow while the user
    may see it: always their own (or, for operators, anyone's), an assignee's while open."""
    notes = api.notifications_of(user).order_by("-created", "-id")
    page = Paginator(notes, PAGE_SIZE).get_page(params.get("page"))
    everyone = api.can_see_all(user)
    rows = [
        {
            "note": note,
            "open": note.cleared is None,
            "link": note.cleared is None or everyone or note.flow.owner_id == user.pk,
        }
        for note in page.object_list
    ]
    return {
        "title": "Notifications",
        "page": page,
        "rows": rows,
        "unread": api.unread_count(user),
        "refresh": _here("studio:notifications", params),
    }


def flow_row(flow_id: int) -> dict[str, Any] | None:
    """A dashboard row (`FLOW_ROW`), the same for everyone who sees the flow; None if the flow
    is gone."""
    flow = api.read_flow(flow_id)
    return None if flow is None else {"flow": flow}


# --- a flow's page ---------------------------------------------------------------------------


def input_form_for(flow: Flow, data: Any = None) -> forms.Form:
    """The form that answers `flow`'s waiting step: its script's `input_form` (typed fields,
    or Approve / Reject for a decision), else one box per `input_fields` name, else one JSON
    textarea. Its ids name the flow, so that many of them fit one page ("Waiting for me")."""
    auto_id = f"id_f{flow.pk}_%s"
    form_class = api.input_form_of(flow)
    if form_class is not None:
        return typed_input_form(form_class, data, auto_id=auto_id)
    step = flow.current_step or {}
    info = api.script(step.get("script", ""))
    fields = list(info["input_fields"]) if info is not None else []
    if fields:
        return FieldsInputForm(data, fields=fields, auto_id=auto_id)
    return JSONInputForm(data, auto_id=auto_id)


# What an event's data holds of results and inputs: not shown to an assignee whose step
# hides the flow's results (as in the REST API).
HIDDEN_EVENT_KEYS = ("result", "input", "dropped")


def viewer_role(user: Any, flow: Flow) -> tuple[Any, ...]:
    """What the viewer is to a flow's page, as far as the page differs between viewers: every
    operator sees the same page ("operator", staff or not: tracebacks); the owner sees the
    overrides, and the form only when the wait is not assigned to others; an assignee sees
    the form and what the step lets assignees see. The live updates share one render among
    the watchers of one role (the owner's and each assignee's are their own)."""
    if api.can_see_all(user):
        return ("operator", bool(user.is_staff))
    if flow.owner_id == user.pk:
        return ("owner", user.pk)
    return ("assignee", user.pk)


def flow_live(user: Any, flow: Flow, *, input_form: Any = None, **extra: Any) -> dict[str, Any]:
    """A flow page's live area (`FLOW_LIVE`; the page shows it too) as `user` may see it:
    status, whom the wait is assigned to and its deadline, diagram, step results (not to an
    assignee whose step hides them), timeline, the input form when `user` may answer, and
    the overrides that fit the state (owner and operators only). `input_form` replaces the
    fresh input form (one with the user's errors)."""
    operates = api.can_operate(user, flow)
    shown = api.sees_results(user, flow)
    events = api.latest_events(flow, 200)
    if not shown:
        for event in events:  # (never saved: what this page shows of them)
            if isinstance(event.data, dict):
                event.data = {k: v for k, v in event.data.items() if k not in HIDDEN_EVENT_KEYS}
    results = api.results_for_display(flow) if shown else [None] * flow.length
    rows = [
        {"index": i, "step": step, "result": results[i], "done": i < len(flow.stored_results)}
        for i, step in enumerate(flow.steps)
    ]
    actions = api.available_actions(flow, user)
    answers = "input" in actions
    if input_form is None and answers:
        input_form = input_form_for(flow)
    assigned = assigned_to(flow)
    return {
        "flow": flow,
        "rows": rows,
        "results_shown": shown,
        "events": events,
        "timeline": timeline.flow_items(events, shown),
        "polling": flow.state in api.ACTIVE,
        "is_staff": user.is_staff,
        "diagram": flow_diagram(flow),
        "input_form": input_form,
        "decision": api.is_decision(api.input_form_of(flow)),
        "assigned": assigned,
        # The owner of a wait assigned to others sees whom it waits for, and no form.
        "waits_for_others": (
            flow.state == api.FlowState.WAITING
            and not answers
            and bool(assigned["users"] or assigned["groups"])
        ),
        "operates": operates,
        "actions": [a for a in actions if a in OVERRIDES or a in OWN_PAGES] if operates else [],
        "retry": api.retry_status(flow) if flow.state == api.FlowState.RETRYING else None,
        "attempts": attempts_shown(flow),
        # Who holds the flow and what the housekeeping will do with it: for operators.
        "health": flow_health(flow) if api.can_see_all(user) else None,
        **extra,
    }


def attempts_shown(flow: Flow) -> int | None:
    """How many attempts the step of a flow on a later attempt gets (shown as "attempt 2
    of 4" while it is queued or runs); None on a first attempt and in other states."""
    if flow.attempt <= 1 or flow.state not in (api.FlowState.PENDING, api.FlowState.RUNNING):
        return None
    policy = api.step_policy(flow)
    return policy.attempts if policy is not None else None


def flow_health(flow: Flow) -> dict[str, Any]:
    """The "Who holds it" panel: the worker and thread performing the flow's step and its
    last heartbeat (`engine.api.flow_holder`), and what the housekeeping will do with the
    flow and when (`engine.api.housekeeping_plan`), as of now."""
    now = timezone.now()
    return {"holder": api.flow_holder(flow), "plan": api.housekeeping_plan(flow, now), "now": now}


# --- a flow's manual overrides ---------------------------------------------------------------

# Overrides with a page of their own (not `confirm`): the move onto another version
# (studio.web.versions).
OWN_PAGES = {"change_version": "studio:flow_change_version"}

OVERRIDES = {
    "move": "Move to a step",
    "retry": "Retry the current step",
    "skip": "Skip the current step",
    "kill": "Kill the flow",
    "resume": "Resume the flow",
    "give_up": "Give up retrying",
}


def override(action: str) -> str:
    """`action` if it names an override; 404 otherwise."""
    if action not in OVERRIDES:
        raise Http404("no such action")
    return action


def _step_name(flow: Flow, index: int) -> str:
    if 0 <= index < flow.length:
        step = flow.steps[index]
        return f"step {index + 1} ({step.get('name') or step.get('script')})"
    return f"step {index + 1}"


def preview(flow: Flow, action: str) -> str:
    """What the action will do to this flow, in words."""
    here = _step_name(flow, flow.position)
    subject = here[:1].upper() + here[1:]  # sentence-initial
    if action == "move":
        return (
            f"The flow is {flow.state} at {here}. It will run again from the step you pick, "
            "at once; work already done by other steps is not undone."
        )
    if action == "retry" and flow.state == api.FlowState.RETRYING:
        status = api.retry_status(flow) or {"attempt": flow.attempt, "attempts": "?"}
        return (
            f"Attempt {status['attempt']} of {status['attempts']} of {here} runs now "
            "instead of at its due time; if it fails, the attempts left are retried as usual."
        )
    if action == "retry":
        return (
            f"{subject} will be performed again (the flow is {flow.state}), its attempts "
            "counted afresh."
        )
    if action == "give_up":
        error = f" ({flow.error})" if flow.error else ""
        return (
            f"{subject} is not tried again: the flow fails with its last error{error}. You "
            "can still retry, skip or resume it later."
        )
    if action == "skip":
        after = (
            "the flow completes"
            if flow.position + 1 >= flow.length
            else f"the flow goes on with {_step_name(flow, flow.position + 1)}"
        )
        return f"{subject} is skipped (its result becomes empty) and {after}."
    if action == "kill":
        return (
            f"The flow ends as KILLED at {here}; a step still running has its outcome "
            "discarded. You can resume or retry it later."
        )
    return f"{subject} will be performed again (a waiting step without new input)."


def confirm(
    flow: Flow,
    action: str,
    form: OverrideForm | None = None,
    *,
    version: str | None = None,
    position: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The confirmation of an override: what it will do, and its form (for the flow
    `version` the user's page showed; a bound `form` with the user's errors instead). A
    retry, resume or move shows the flow's data and the params of the step it reruns (a
    move's `position`, by default the step before the current one) to edit first."""
    if form is None:
        chosen = api.parse_id(position) if isinstance(position, str) else None
        if chosen is None or chosen >= flow.length:
            chosen = max(flow.position - 1, 0)
        target = chosen if action == "move" else flow.position
        initial: dict[str, Any] = {
            "version": str(flow.version) if version is None else version,
            "position": chosen,
        }
        if action in EDITABLE and 0 <= target < flow.length:
            initial.update(
                edit_data=_json_text(flow.data),
                edit_params=_json_text(flow.steps[target].get("params") or {}),
                params_step=target,
            )
        form = OverrideForm(initial=initial, **override_form_args(flow, action))
    return {
        "flow": flow,
        "action": action,
        "title": _title(flow, action),
        "preview": preview(flow, action),
        "form": form,
        "destructive": action in {"kill", "move", "give_up"},
        "asks_reason": action in REASONED,
        "params_step": _params_step(flow, form),
        **extra,
    }


def override_form_args(flow: Flow, action: str) -> dict[str, Any]:
    """What an override's form needs of the flow (its steps, data and position)."""
    return {"action": action, "steps": flow.steps, "flow_data": flow.data, "at": flow.position}


def _title(flow: Flow, action: str) -> str:
    if action == "retry" and flow.state == api.FlowState.RETRYING:
        return "Retry now"
    return OVERRIDES[action]


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _params_step(flow: Flow, form: OverrideForm) -> dict[str, Any] | None:
    """The step whose params the edits show: as the form holds it (posted, or initial)."""
    if "params_step" not in form.fields:
        return None
    shown = form["params_step"].value()
    index = api.parse_id(str(shown)) if shown is not None else None
    if index is None or index >= flow.length:
        index = flow.position
    step = flow.steps[index]
    return {"index": index, "number": index + 1, "name": step.get("name") or step.get("script")}


# --- routines --------------------------------------------------------------------------------


def routine_list(user: Any) -> dict[str, Any]:
    return {"routines": api.visible_routines(user).prefetch_related("steps__task")}


def palette() -> list[dict[str, Any]]:
    """The registered Task scripts as the builder's palette shows them, by label. Besides
    what `api.scripts()` tells: `paragraphs`, the docstring's paragraphs as (text, is_code)
    parts (`code` between backticks); `form_fields`, what its `input_form` asks for, from its
    JSON Schema (name, kind, required; a decision form's choice as "Approve / Reject"); and
    `human`, whether the step waits for a person (its params name, by convention, who may
    answer, `assign_to`, and the deadline, `timeout`)."""
    kinds = {"string": "text", "boolean": "yes / no", "integer": "whole number"}
    formats = {"date-time": "date and time", "decimal": "decimal number"}

    def kind(prop: dict[str, Any]) -> str:
        items = prop["items"] if isinstance(prop.get("items"), dict) else {}
        if "enum" in prop:
            return "one of: " + ", ".join(map(str, prop["enum"]))
        if "enum" in items:
            return "any of: " + ", ".join(map(str, items["enum"]))
        if prop.get("format"):
            return formats.get(prop["format"], str(prop["format"]))
        named = prop.get("type")
        return kinds.get(named, str(named)) if isinstance(named, str) else "any JSON value"

    def paragraphs(doc: str) -> list[list[tuple[str, bool]]]:
        blocks: list[list[str]] = [[]]
        for line in doc.splitlines():
            if line.strip():
                blocks[-1].append(line.strip())
            elif blocks[-1]:
                blocks.append([])
        texts = [" ".join(block) for block in blocks if block]
        return [
            [(part, i % 2 == 1) for i, part in enumerate(text.split("`")) if part]
            if text.count("`") % 2 == 0
            else [(text, False)]
            for text in texts
        ]

    infos = []
    for info in api.scripts().values():
        schema = api.script_schema(info["name"]) if info["has_input_form"] else None
        decision = bool(schema and schema.get("x-decision"))
        required = set(schema.get("required") or []) if schema else set()
        fields = [
            {
                "name": name,
                "kind": "Approve / Reject" if decision and name == "decision" else kind(prop),
                "required": name in required,
                "help": prop.get("description", ""),
            }
            for name, prop in ((schema or {}).get("properties") or {}).items()
        ]
        infos.append(
            {
                **info,
                "paragraphs": paragraphs(info["doc"]),
                "form_fields": fields,
                "decision": decision,
                "human": bool(info["has_input_form"] or info["input_fields"]),
                "policy": retry_policy_text(info),
            }
        )
    return sorted(infos, key=lambda info: (info["label"].lower(), info["name"]))


def retry_policy_text(info: dict[str, Any]) -> str:
    """A script's retry policy and time limit in brief, from what `engine.api.scripts()`
    tells ("" when it neither retries nor has a time limit): "Retries 3 times, after 60 s,
    each wait ×2 (at most 3600 s) · time limit 30 s"."""
    parts = []
    retries = info.get("retries") or 0
    if retries:
        times = "once" if retries == 1 else f"{retries} times"
        delay = info.get("retry_delay") or 0
        text = f"Retries {times}, " + (f"after {number_text(delay)} s" if delay else "at once")
        backoff = info.get("retry_backoff") or 1
        if delay and retries > 1 and backoff != 1:
            most = number_text(info.get("retry_max_delay") or 0)
            text += f", each wait ×{number_text(backoff)} (at most {most} s)"
        if delay and info.get("retry_jitter"):
            text += f", ±{number_text(round(info['retry_jitter'] * 100, 2))}% jitter"
        retry_on = info.get("retry_on") or []
        if retry_on and retry_on != ["Exception"]:
            text += " on " + ", ".join(retry_on)
        parts.append(text)
    if info.get("time_limit"):
        parts.append(f"time limit {number_text(info['time_limit'])} s")
    text = " · ".join(parts)
    return text[:1].upper() + text[1:]


def apply_op(op: str, drafts: list[StepDraft]) -> list[StepDraft]:
    """The builder's steps after one edit: `add:<script>`, `up:<key>`, `down:<key>`,
    `remove:<key>`. Anything else leaves them as they are."""
    verb, _, arg = op.partition(":")
    if verb == "add" and arg:
        return [*drafts, StepDraft(script=arg)]
    keys = [d.key for d in drafts]
    if arg not in keys:
        return drafts
    index = keys.index(arg)
    if verb == "remove":
        return drafts[:index] + drafts[index + 1 :]
    other = index - 1 if verb == "up" else index + 1 if verb == "down" else -1
    if 0 <= other < len(drafts):
        drafts = list(drafts)
        drafts[index], drafts[other] = drafts[other], drafts[index]
    return drafts


def builder(
    routine: Routine | None, form: RoutineForm, drafts: list[StepDraft], **extra: Any
) -> dict[str, Any]:
    """The routine builder: the form, the steps being composed, the palette, the preview."""
    title = (form.data.get("name") if form.is_bound else form.initial.get("name")) or "new routine"
    return {
        "routine": routine,
        "form": form,
        "drafts": drafts,
        "palette": palette(),
        "preview": steps_diagram(title, drafts),
        "has_flows": bool(routine and routine.flows.exists()),
        **extra,
    }


def routine_preview(title: str, drafts: list[StepDraft]) -> dict[str, Any]:
    """The builder's diagram alone, for the steps as they are in the form now."""
    return {"preview": steps_diagram(title or "new routine", drafts)}


# --- LTMs ------------------------------------------------------------------------------------

RECENT_RUNS = 20
RUNS_OF_AN_LTM = 50


def _ltm_class(name: str) -> Any:
    cls = api.ltm_roots().get(name)
    if cls is None:
        raise Http404("no such LTM")
    return cls


def require_ltm(name: str) -> str:
    """`name` if an LTM is registered under it; 404 otherwise."""
    _ltm_class(name)
    return name


def ltm_list(user: Any) -> dict[str, Any]:
    """Every registered LTM with its diagram, and the user's recent runs."""
    ltms = [
        {
            "name": name,
            "doc": (cls.__doc__ or "").strip(),
            "diagram": diagram(partial(api.ltm_diagram, cls)),
        }
        for name, cls in sorted(api.ltm_roots().items())
    ]
    return {"ltms": ltms, "runs": api.visible_ltm_runs(user)[:RECENT_RUNS]}


def ltm_detail(user: Any, name: str) -> dict[str, Any]:
    """One LTM: its diagram and the user's runs of it (404 for an unknown name)."""
    cls = _ltm_class(name)
    return {
        "name": name,
        "doc": (cls.__doc__ or "").strip(),
        "diagram": diagram(lambda: api.ltm_diagram(cls)),
        "runs": api.visible_ltm_runs(user).filter(name=name)[:RUNS_OF_AN_LTM],
    }


def ltm_run_live(
    run: LtmRun, *, fire_form: FireTransitionForm | None = None, **extra: Any
) -> dict[str, Any]:
    """An LTM run page's live area (`LTM_RUN_LIVE`; the page shows it too): the diagram
    coloured by status, global and per-state state, the event log and the controls.
    `fire_form` replaces the fresh form (one with the user's errors)."""
    try:
        graph = diagram(lambda: api.ltm_diagram(api.load_ltm(run.pk)))
    except Exception as exc:  # a run whose tree cannot be loaded still shows its records
        graph = {"error": f"the run's tree could not be loaded: {exc}"}
    # (`change` is the time machine's record of each write, up to a whole run: not shown)
    events = list(run.events.defer("change").select_related("actor").order_by("-seq")[:200])
    return {
        "run": run,
        "diagram": graph,
        "instances": run.instances.order_by("fqn"),
        "events": events,
        "event_log": timeline.ltm_items(run, events),
        "fire_form": fire_form or FireTransitionForm(),
        "polling": run.state in {"pending", "running"},
        **extra,
    }


# --- an LTM run's history: the run as it was after an event, rollback and copy from there ----

# The events listed beside a past view: this many either side of the one viewed.
HISTORY_WINDOW = 100
TRAVELS = {"rollback": "Roll back to here", "copy": "Copy from here"}


def travel(action: str) -> str:
    """`action` if it is one of the time machine's (rollback, copy); 404 otherwise."""
    if action not in TRAVELS:
        raise Http404("no such action")
    return action


def running_now(run: LtmRun) -> list[str]:
    """The states of `run` executing now (an execution a worker has claimed): a rollback
    would discard their outcome."""
    claimed = LtmExecution.objects.filter(run=run, status="claimed")
    return sorted(set(claimed.values_list("fqn", flat=True)))


def _seen(value: Any, run: LtmRun) -> int:
    """The last event of the run the user's page showed (`?seen=`); the run's own if the
    value is missing or not a number of the run's range."""
    number = api.parse_id(value)
    return number if number is not None and number <= run.seq else run.seq


def ltm_history_confirm(
    run: LtmRun,
    seq: int,
    action: str,
    *,
    form: RollbackLtmForm | None = None,
    seen: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """The confirmation of a rollback to (or a copy from) event `seq`: what will happen, in
    words, and the form (for the last event the user saw, `seen`; a bound `form` with the
    user's errors instead). A rollback names what is executing now: the form then asks to
    discard its outcome explicitly."""
    action = travel(action)
    running = running_now(run) if action == "rollback" else []
    if action == "rollback":
        saw = _seen(seen, run) if form is None else None
        if form is None:
            form = RollbackLtmForm(initial={"expected_seq": saw})
        preview = (
            f"The run goes back to how it was after event {seq}: states, global state and "
            f"appended lists; executions queued then are queued again; events after {seq} "
            "stay in the history; the rollback can itself be rolled back."
        )
    else:
        saw = None
        preview = (
            f"A new run of {run.name} owned by you starts from event {seq}; the original is "
            "untouched; what was queued then runs in the copy."
        )
    return {
        "action": action,
        "seq": seq,
        "title": TRAVELS[action],
        "preview": preview,
        "form": form,
        "running": running,
        "moved_on": saw is not None and saw < run.seq,
        "seen": saw,
        "destructive": action == "rollback",
        **extra,
    }


def ltm_run_past(
    user: Any,
    run: LtmRun,
    seq: Any,
    *,
    action: str | None = None,
    form: RollbackLtmForm | None = None,
    seen: Any = None,
    error: str = "",
    stale: bool = False,
) -> dict[str, Any]:
    """A run page's past view (`LTM_RUN_PAST`): the run as it was right after its event
    `seq` — the diagram, every state's status, data and error, the global state — with the
    events around it, and (`action`) the confirmation of a rollback or a copy from there.
    Raises what `engine.api.ltm_at` raises: a ValueError naming the range for a `seq`
    outside the run's history, PermissionDenied, `LtmRun.DoesNotExist`."""
    view = api.ltm_at(run.pk, seq, user)
    then = view.run
    assert then is not None  # ltm_at always gives the run's record
    at = then.seq
    events = run.events.defer("change").select_related("actor")
    low = max(1, at - HISTORY_WINDOW)
    instances = [
        {
            "fqn": inst.fqn,
            "status": inst.status,
            "params": dict(inst.params),
            "state": dict(inst.state),
            "error": inst.error or "",
            "entry": inst.entry,
        }
        for inst in sorted(view.instances.values(), key=lambda inst: inst.fqn)
    ]
    context: dict[str, Any] = {
        "at": at,
        "of": run.seq,
        "event": events.filter(seq=at).first(),
        "state": then.state,
        "error": then.error,
        "global_state": dict(view.state),
        "diagram": diagram(lambda: api.ltm_diagram(view)),
        "instances": instances,
        "events": events.filter(seq__gte=low, seq__lte=at + HISTORY_WINDOW).order_by("-seq"),
        # The write holding event `at` is the run's latest: it is as it was then already.
        "is_now": then.version >= run.seq,
        "killed": run.state == "killed",
        "may_operate": api.can_operate_ltm(user, run),
        "confirm": None,
    }
    if action is not None:
        context["confirm"] = ltm_history_confirm(
            run, at, action, form=form, seen=seen, error=error, stale=stale
        )
    return context


# --- API tokens ------------------------------------------------------------------------------


def tokens(user: Any, **extra: Any) -> dict[str, Any]:
    """The user's API tokens, newest first (`created` and `raw`: the one just made)."""
    return {"tokens": ApiToken.objects.filter(user=user).order_by("-created"), **extra}
