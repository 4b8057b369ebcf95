"""Personal API tokens: list, create (the raw token is returned once), revoke. Only a
signed-in studio session manages tokens, so a leaked token cannot mint more of itself."""

from typing import Any

from django.http import Http404, HttpRequest
from ninja import Path, Router, Status

from studio.api.auth import current_user, session_auth
from studio.api.schemas import MAX_ID, TokenCreated, TokenIn, TokenOut
from studio.models import ApiToken

router = Router(tags=["tokens"], auth=[session_auth])


def _token_out(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.pk,
        "name": token.name,
        "prefix": token.prefix,
        "created": token.created,
        "last_used": token.last_used,
        "revoked": token.revoked,
    }


@router.get("/tokens", response=list[TokenOut], summary="Your API tokens")
def list_tokens(request: HttpRequest) -> list[dict[str, Any]]:
    """Your tokens, newest first (prefix only: the raw token is never stored)."""
    return [_token_out(token) for token in ApiToken.objects.filter(user=current_user(request))]


@router.post("/tokens", response={201: TokenCreated}, summary="Create an API token")
def create_token(request: HttpRequest, payload: TokenIn) -> Status[dict[str, Any]]:
    """A new token; the response holds the raw token, shown this once."""
    token, raw = ApiToken.issue(current_user(request), payload.name.strip() or "token")
    return Status(201, {**_token_out(token), "token": raw})


@router.delete("/tokens/{token_id}", response=TokenOut, summary="Revoke an API token")
def revoke_token(request: HttpRequest, token_id: int = Path(..., ge=1, le=MAX_ID)) -> Any:
    """Revoke one of your tokens; it stops working at once."""
    token = ApiToken.objects.filter(pk=token_id, user=current_user(request)).first()
    if token is None:
        raise Http404
    token.revoke()
    return _token_out(token)
