"""API tokens in the studio: a user lists, creates and revokes their own. A new token's secret
is shown once, on the page that created it; only its hash is stored."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from studio.models import ApiToken
from studio.web import pages
from studio.web.forms import TokenForm
from studio.web.http import HtmxHttpRequest, SignedInHttpRequest


def _page(request: HtmxHttpRequest, status: int = 200, **extra: object) -> HttpResponse:
    context = pages.tokens(request.user, **extra)
    return render(request, "studio/tokens.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: SignedInHttpRequest) -> HttpResponse:
    if request.method == "POST":
        form = TokenForm(request.POST)
        if not form.is_valid():
            if not form.data.get("name", "").strip():
                error = "Give the token a name, e.g. the program that uses it."
            else:
                error = "Name: " + " ".join(map(str, form.errors["name"]))
            return _page(request, status=400, error=error)
        token, raw = ApiToken.issue(request.user, form.cleaned_data["name"])
        return _page(request, created=token, raw=raw)
    return _page(request)


@login_required
@require_POST
def token_revoke(request: SignedInHttpRequest, pk: int) -> HttpResponse:
    token = ApiToken.objects.filter(pk=pk, user=request.user).first()
    if token is None:
        raise Http404("no such token")
    token.revoke()
    return redirect("studio:tokens")
