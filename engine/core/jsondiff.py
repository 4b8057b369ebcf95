"""What changed between two JSON values, as a list of changes by path: pure, for the timeline
of a flow whose data or step params an operator edited."""

from __future__ import annotations

import json
from typing import Any

ADDED, REMOVED, CHANGED = "added", "removed", "changed"


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Changes from `old` to `new`: objects are compared key by key (recursively), any
    other value (lists included) as a whole. Each change is ``{"path", "op", "old", "new"}``
    (no "old" for an added key, no "new" for a removed one); paths join keys with dots."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append({"path": where, "op": ADDED, "new": new[key]})
            elif key not in new:
                changes.append({"path": where, "op": REMOVED, "old": old[key]})
            else:
                changes.extend(diff(old[key], new[key], where))
        return changes
    if old == new and type(old) is type(new):
        return []
    return [{"path": path or "(all)", "op": CHANGED, "old": old, "new": new}]


def describe(changes: list[dict[str, Any]], limit: int = 20) -> str:
    """The changes in words, one per line: ``amount: 10 → 12``."""

    def show(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        return text if len(text) <= 80 else text[:77] + "…"

    lines = []
    for change in changes[:limit]:
        if change["op"] == ADDED:
            lines.append(f"{change['path']}: added {show(change['new'])}")
        elif change["op"] == REMOVED:
            lines.append(f"{change['path']}: removed (was {show(change['old'])})")
        else:
            lines.append(f"{change['path']}: {show(change['old'])} → {show(change['new'])}")
    if len(changes) > limit:
        lines.append(f"… and {len(changes) - limit} more")
    return "\n".join(lines)
