"""The one shape of an event row, for both slices: a flow's history (`FlowEvent`) and an LTM
run's (`LtmEvent`) are append-only logs numbered per subject from 1, and reach the live feed
(engine.events) as the same dict with a few fields of their own."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models


class EventRow(models.Model):
    """What every event row holds; a slice adds its subject (a flow, a run), its `state`
    (with its own choices) and what else it records."""

    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=40)
    # Most events have no actor (the engine's own steps): only those with one are indexed
    # (`actor_index`, for a user's deletion), not a NULL entry written with every event.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created = models.DateTimeField(auto_now_add=True)

    state: Any  # each slice's own field
    feed_type = ""  # "flow.event", "ltm.event": what live clients dispatch on

    class Meta:
        abstract = True

    @staticmethod
    def actor_index(name: str) -> models.Index:
        """The index of the events that have an actor (each slice's Meta names it)."""
        return models.Index(fields=["actor"], condition=models.Q(actor__isnull=False), name=name)

    def subject(self) -> dict[str, Any]:
        """The fields that say what the event is about (overridden by each slice)."""
        return {}

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.subject(),
            "seq": self.seq,
            "kind": self.kind,
            "actor": self.actor_id,
            "state": self.state,
            "data": self.data,
            "created": self.created.isoformat() if self.created else None,
        }

    def feed(self, *, owner: Any, version: int, **more: Any) -> dict[str, Any]:
        """The event as the live feed carries it."""
        return {
            **self.as_dict(),
            "type": self.feed_type,
            "owner": owner,
            "version": version,
            **more,
        }
