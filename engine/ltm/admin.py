"""Django admin pages of LTM runs: read-only, since state changes go through engine.api."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from engine.ltm.models import LtmAppend, LtmEvent, LtmExecution, LtmInstance, LtmRun


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: Any, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]


class LtmInstanceInline(admin.TabularInline):
    model = LtmInstance
    extra = 0
    can_delete = False
    fields = ("fqn", "status", "state", "params", "error", "entry")
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class LtmEventInline(admin.TabularInline):
    model = LtmEvent
    extra = 0
    can_delete = False
    fields = ("seq", "kind", "fqn", "state", "actor", "data", "created")
    readonly_fields = fields

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(LtmRun)
class LtmRunAdmin(_ReadOnly):
    list_display = ("id", "name", "owner", "state", "seq", "updated")
    list_filter = ("state", "name")
    search_fields = ("name", "owner__username", "error")
    list_select_related = ("owner",)
    inlines = [LtmInstanceInline, LtmEventInline]


@admin.register(LtmExecution)
class LtmExecutionAdmin(_ReadOnly):
    list_display = ("id", "run", "fqn", "status", "attempts", "lease_until", "dispatched_at")
    list_filter = ("status",)
    search_fields = ("fqn",)


@admin.register(LtmEvent)
class LtmEventAdmin(_ReadOnly):
    list_display = ("run", "seq", "kind", "fqn", "state", "actor", "created")
    list_filter = ("kind",)
    list_select_related = ("run", "actor")


@admin.register(LtmAppend)
class LtmAppendAdmin(_ReadOnly):
    list_display = ("execution", "fqn", "call_index", "target", "key", "created")
