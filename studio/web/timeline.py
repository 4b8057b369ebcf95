"""Event logs of a flow's page and an LTM run's page, each event's item rendered once per
server process.

A page's live area is rendered again at every change of its flow or run, for every role that
watches it, with its latest 200 events; an event's item took about 0.2 ms to render, some
40 ms for a full log, at every re-render. An event is never changed once written, so its
item is the same at every render: it is kept, keyed by what it shows (the event's row and
data, its actor's name, what the viewer may see of it, whether a run's time machine still
reaches it) and by what the page's clock makes of it (the time zone, and today's date: a
retry's time says its date only when it is not today).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from django.template.loader import get_template
from django.utils import timezone
from django.utils.safestring import SafeString

FLOW_EVENT = "studio/partials/_flow_event.html"
LTM_EVENT = "studio/partials/_ltm_event_item.html"
KEPT = 20_000  # items kept (about 1 KB each), the least recently shown dropped first

_items: OrderedDict[tuple[Any, ...], SafeString] = OrderedDict()
_lock = threading.Lock()


def flow_items(events: Iterable[Any], shown: bool) -> list[SafeString]:
    """A flow's timeline items of `events` (FlowEvent rows, their actors selected with them;
    their data already cut to what the viewer may see when not `shown`)."""
    return _items_of(
        events,
        FLOW_EVENT,
        lambda event: (event.state, event.position, event.message, shown),
        lambda event: {"event": event},
    )


def ltm_items(run: Any, events: Iterable[Any]) -> list[SafeString]:
    """An LTM run's event log items of `events` (LtmEvent rows of `run`, their actors
    selected with them); an event's number links to the run as it was then while the time
    machine reaches it (`run.history_from`)."""
    return _items_of(
        events,
        LTM_EVENT,
        lambda event: (event.fqn, event.seq >= run.history_from),
        lambda event: {"event": event, "run": run},
    )


def _items_of(
    events: Iterable[Any],
    template_name: str,
    shows: Callable[[Any], tuple[Any, ...]],
    context: Callable[[Any], dict[str, Any]],
) -> list[SafeString]:
    clock = (timezone.get_current_timezone_name(), timezone.localdate())
    template = None
    out = []
    for event in events:
        actor = event.actor.get_username() if event.actor_id else None
        # (the row's id and time name it; its columns too, as ids may come again where a
        # transaction that made them was rolled back, in tests whose clock stands still)
        row = (template_name, event.pk, event.created, event.seq, event.kind)
        key = (*row, hash(repr(event.data)), *shows(event), actor, clock)
        with _lock:
            html = _items.get(key)
            if html is not None:
                _items.move_to_end(key)
        if html is None:
            template = template or get_template(template_name)
            html = SafeString(template.render(context(event)))
            with _lock:
                _items[key] = html
                while len(_items) > KEPT:
                    _items.popitem(last=False)
        out.append(html)
    return out
