"""A flow's timeline, each event's item rendered once per server process.

A flow page's live area is rendered again at every change of the flow, for every role that
watches it, with its latest 200 events; an event's item (`_flow_event.html`) took about
0.2 ms to render, 40 ms for a full timeline, at every re-render. An event is never changed
once written, so its item is the same at every render: it is kept, keyed by what it shows
(the event's row, whether its data is shown in full, its actor's name) and by what the
page's clock makes of it (the time zone, and today's date: a retry's time says its date
only when it is not today).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from django.template.loader import get_template
from django.utils import timezone
from django.utils.safestring import SafeString

EVENT_ITEM = "studio/partials/_flow_event.html"
KEPT = 20_000  # items kept (about 1 KB each), the least recently shown dropped first

_items: OrderedDict[tuple[Any, ...], SafeString] = OrderedDict()
_lock = threading.Lock()


def items(events: Iterable[Any], shown: bool) -> list[SafeString]:
    """The timeline's items of `events` (FlowEvent rows, their actors selected with them;
    their data already cut to what the viewer may see when not `shown`)."""
    clock = (timezone.get_current_timezone_name(), timezone.localdate())
    template = None
    out = []
    for event in events:
        actor = event.actor.get_username() if event.actor_id else None
        # (the row's id and time name it; its columns too, as ids may come again where a
        # transaction that made them was rolled back, in tests whose clock stands still)
        row = (event.pk, event.created, event.seq, event.kind, event.state, event.position)
        key = (*row, event.message, hash(repr(event.data)), shown, actor, clock)
        with _lock:
            html = _items.get(key)
            if html is not None:
                _items.move_to_end(key)
        if html is None:
            template = template or get_template(EVENT_ITEM)
            html = SafeString(template.render({"event": event}))
            with _lock:
                _items[key] = html
                while len(_items) > KEPT:
                    _items.popitem(last=False)
        out.append(html)
    return out
