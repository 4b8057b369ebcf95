from typing import Any

from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from studio.api.urls import api


class FaviconView(RedirectView):
    """`/favicon.ico`, which browsers and tools ask for whatever the page links: the
    studio's icon among its static files (which WhiteNoise serves)."""

    permanent = False

    def get_redirect_url(self, *args: Any, **kwargs: Any) -> str:
        return static("favicon.svg")


urlpatterns = [
    path("favicon.ico", FaviconView.as_view(), name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/", include("studio.web.account_urls")),
    path("api/", api.urls),
    path("", include("studio.web.urls")),
]
