from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    # Until the studio's own pages land, its home is the admin of flows and routines.
    path("", RedirectView.as_view(url="/admin/engine/flow/", permanent=False)),
]
