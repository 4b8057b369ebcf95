"""What the REST API's test modules share: a user's token, clients that send a token, and
JSON requests."""

from __future__ import annotations

import pytest
from django.test import Client

from studio.models import ApiToken


@pytest.fixture
def token(user) -> str:
    return ApiToken.issue(user, "tests")[1]


@pytest.fixture
def client_for():
    def make(raw: str) -> Client:
        return Client(headers={"Authorization": f"Bearer {raw}"})

    return make


@pytest.fixture
def c(client_for, token) -> Client:
    return client_for(token)


def post(client: Client, url: str, body=None):
    return client.post(url, body if body is not None else {}, content_type="application/json")


def put(client: Client, url: str, body):
    return client.put(url, body, content_type="application/json")
