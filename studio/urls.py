from django.contrib import admin
from django.urls import include, path

from studio.api.urls import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", api.urls),
    path("", include("studio.web_urls")),
]
