"""The studio's pages (mounted at the site root by studio.urls)."""

from django.urls import path

from studio.web.views import bulk, flows, ltms, overrides, routines, schedules, tokens, versions

app_name = "studio"

urlpatterns = [
    path("", flows.dashboard, name="dashboard"),
    path("tokens/", tokens.token_list, name="tokens"),
    path("tokens/<int:pk>/revoke/", tokens.token_revoke, name="token_revoke"),
    path("waiting/", flows.waiting_for_me, name="waiting"),
    path("notifications/", flows.notifications, name="notifications"),
    path("bulk/", bulk.bulk_list, name="bulk_list"),
    path("bulk/preview/", bulk.bulk_preview, name="bulk_preview"),
    path("bulk/start/", bulk.bulk_start, name="bulk_start"),
    path("bulk/<int:pk>/", bulk.bulk_detail, name="bulk_detail"),
    path("flows/<int:pk>/", flows.flow_detail, name="flow_detail"),
    path("flows/<int:pk>/live/", flows.flow_live, name="flow_live"),
    path("flows/<int:pk>/input/", flows.push_input, name="flow_input"),
    path("flows/<int:pk>/confirm/<str:action>/", overrides.confirm, name="flow_confirm"),
    path("flows/<int:pk>/act/<str:action>/", overrides.act, name="flow_act"),
    path(
        "flows/<int:pk>/change-version/",
        versions.change_version,
        name="flow_change_version",
    ),
    path("routines/", routines.routine_list, name="routine_list"),
    path("routines/new/", routines.routine_builder, name="routine_new"),
    path("routines/preview/", routines.routine_preview, name="routine_preview"),
    path("routines/<int:pk>/edit/", routines.routine_builder, name="routine_edit"),
    path("routines/<int:pk>/start/", routines.start_flow, name="routine_start"),
    path("routines/<int:pk>/versions/", versions.routine_versions, name="routine_versions"),
    path("schedules/", schedules.schedule_list, name="schedules"),
    path("schedules/hint/", schedules.schedule_hint, name="schedule_hint"),
    path(
        "schedules/<int:pk>/confirm/<str:action>/",
        schedules.schedule_confirm,
        name="schedule_confirm",
    ),
    path("schedules/<int:pk>/act/<str:action>/", schedules.schedule_act, name="schedule_act"),
    path("ltms/", ltms.ltm_list, name="ltm_list"),
    path("ltms/<str:name>/", ltms.ltm_detail, name="ltm_detail"),
    path("ltms/<str:name>/start/", ltms.ltm_start, name="ltm_start"),
    path("ltm-runs/<uuid:pk>/", ltms.run_detail, name="ltm_run"),
    path("ltm-runs/<uuid:pk>/act/<str:action>/", ltms.run_act, name="ltm_run_act"),
    path("ltm-runs/<uuid:pk>/at/<int:seq>/", ltms.run_at, name="ltm_run_at"),
    path(
        "ltm-runs/<uuid:pk>/at/<int:seq>/rollback/",
        ltms.run_travel,
        {"action": "rollback"},
        name="ltm_run_rollback",
    ),
    path(
        "ltm-runs/<uuid:pk>/at/<int:seq>/copy/",
        ltms.run_travel,
        {"action": "copy"},
        name="ltm_run_copy",
    ),
]
