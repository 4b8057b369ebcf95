from django.contrib import admin
from django.urls import include, path

from studio.api.urls import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("studio.web.account_urls")),
    path("api/", api.urls),
    path("", include("studio.web.urls")),
]
