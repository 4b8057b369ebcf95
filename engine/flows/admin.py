from django.contrib import admin

from engine.flows.models import Flow, FlowEvent, Routine, RoutineStep, Task
from engine.liveness import Worker


class RoutineStepInline(admin.TabularInline):
    model = RoutineStep
    extra = 0


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("name", "script", "created")
    search_fields = ("name", "script")


@admin.register(Routine)
class RoutineAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "version", "updated")
    search_fields = ("name",)
    inlines = [RoutineStepInline]


class FlowEventInline(admin.TabularInline):
    model = FlowEvent
    extra = 0
    can_delete = False
    fields = ("seq", "kind", "state", "position", "actor", "message", "data", "created")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Flow)
class FlowAdmin(admin.ModelAdmin):
    # State changes go through engine.api (and its event log), never through a raw form.
    list_display = ("id", "routine", "owner", "state", "position", "wait_reason", "updated")
    list_filter = ("state", "routine")
    search_fields = ("routine__name", "owner__username", "wait_reason", "error")
    list_select_related = ("routine", "owner")
    readonly_fields = [f.name for f in Flow._meta.fields]
    inlines = [FlowEventInline]

    def has_add_permission(self, request):
        return False


@admin.register(FlowEvent)
class FlowEventAdmin(admin.ModelAdmin):
    list_display = ("flow", "seq", "kind", "state", "position", "actor", "created")
    list_filter = ("kind",)
    list_select_related = ("flow", "actor")
    readonly_fields = [f.name for f in FlowEvent._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    """The consumer processes that beat (a dead one's row goes once its work is handed on)."""

    list_display = ("id", "host", "pid", "started", "beat")
    readonly_fields = [f.name for f in Worker._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
