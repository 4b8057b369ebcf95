"""Records of the studio itself: the API tokens users create to call the REST API."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections, models, router
from django.utils import timezone

from engine.api import check_text, cursor_for, model_from_row

TOKEN_PREFIX = "fs_"
PREFIX_LENGTH = 8  # characters of the raw token kept in clear so a user can tell tokens apart
# Writing `last_used` on every request would turn each read into a write; once a minute is
# precise enough to tell a forgotten token from a busy one.
LAST_USED_PRECISION = timedelta(minutes=1)


def hash_token(raw: str) -> str:
    """The stored form of a raw token. Tokens are long random secrets, so a fast hash is
    enough: there is nothing to guess that a slow hash would protect."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked=False)


class ApiToken(models.Model):
    """A personal token for the REST API. Only its hash is stored; the raw token is shown
    once, when it is created."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH)
    hashed_key = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: models.Model, name: str) -> tuple[ApiToken, str]:
        """Create a token for `user`; returns the record and the raw token (shown once)."""
        check_text(name, "name")
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user, name=name, prefix=raw[:PREFIX_LENGTH], hashed_key=hash_token(raw)
        )
        return token, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiToken | None:
        """The active token whose hash matches `raw` (with its user), or None."""
        if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
            return None
        token = _read_active_token(hash_token(raw))
        if token is not None:
            token.touch()
        return token

    def touch(self) -> None:
        """Record that the token was used (at most once per LAST_USED_PRECISION)."""
        now = timezone.now()
        if self.last_used is None or now - self.last_used >= LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=self.pk).update(last_used=now)
            self.last_used = now

    def revoke(self) -> None:
        if not self.revoked:
            ApiToken.objects.filter(pk=self.pk).update(revoked=True)
            self.revoked = True


# --- reading a token on every API request --------------------------------------------------
#
# What `ApiToken.objects.active().select_related("user").filter(hashed_key=?,
# user__is_active=True).first()` reads (the hash is unique), as one statement written once:
# compiling that query cost more than running it, on every request of the API.

_TOKEN_SQL: dict[str, str] = {}


def _token_sql(db: Any) -> str:
    sql = _TOKEN_SQL.get(db.vendor)
    if sql is None:
        quote = db.ops.quote_name
        token, user = ApiToken._meta, get_user_model()._meta
        column = lambda meta, name: quote(meta.get_field(name).column)  # noqa: E731
        columns = [f"t.{quote(field.column)}" for field in token.concrete_fields]
        columns += [f"u.{quote(field.column)}" for field in user.concrete_fields]
        sql = _TOKEN_SQL[db.vendor] = (
            f"SELECT {', '.join(columns)} FROM {quote(token.db_table)} t "
            f"JOIN {quote(user.db_table)} u "
            f"ON u.{quote(user.pk.column)} = t.{column(token, 'user')} "
            f"WHERE t.{column(token, 'hashed_key')} = %s AND t.{column(token, 'revoked')} = %s "
            f"AND u.{column(user, 'is_active')} = %s"
        )
    return sql


def _read_active_token(hashed: str) -> ApiToken | None:
    db = connections[router.db_for_read(ApiToken)]
    with cursor_for(db) as cursor:  # (prepared on PostgreSQL, the driver's own on SQLite)
        cursor.execute(_token_sql(db), [hashed, False, True])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(ApiToken._meta.concrete_fields)
    token: ApiToken = model_from_row(db, ApiToken, row[:split])
    token.user = model_from_row(db, get_user_model(), row[split:])
    return token
