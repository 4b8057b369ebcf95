"""Playwright fixtures: Debian's Chromium driven headless, one browser per test.

Playwright's sync API runs an event loop in the test thread, which makes Django refuse ORM
calls there (SynchronousOnlyOperation); DJANGO_ALLOW_ASYNC_UNSAFE is set only while a browser
fixture is alive and restored afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "artifacts" / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")


@pytest.fixture
def browser() -> Iterator[object]:
    _require_chromium()
    from django.db import connections
    from playwright.sync_api import expect, sync_playwright

    # Waiting for the page to show something, not timing it: a generous wait, so that a
    # machine busy with the scale-out pass beside these tests does not fail them.
    expect.set_options(timeout=20_000)
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS
            )
            try:
                yield chromium
            finally:
                chromium.close()
                # Django keeps its connections per async context while Playwright's loop
                # runs: the test's queries had a connection of their own, closed here (it
                # would otherwise stay open and keep the test database from being dropped)
                connections.close_all()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


class Shots:
    """Saves named screenshots of a page under artifacts/screenshots/."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, page, name: str) -> None:
        in_front(page)
        page.screenshot(path=str(SCREENSHOTS / f"{self.prefix}-{name}.png"), full_page=True)


def in_front(page) -> None:
    """Make `page` its window's front tab before a screenshot or a click. Chromium draws no
    frames for a tab behind another, so both wait for it: a screenshot 1-4 s, a click's check
    that its element is stable 1-2 s (tests/browser/test_ltm_history_browser.py took twice
    as long for it)."""
    page.bring_to_front()


@pytest.fixture
def shots(request) -> Shots:
    return Shots(request.node.name.removeprefix("test_"))


@pytest.fixture
def csp_violations() -> list[str]:
    """Console messages about the Content-Security-Policy (a test asserts there are none)."""
    return []


def watch_console(page, violations: list[str]) -> None:
    def on_console(message) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            violations.append(message.text)

    page.on("console", on_console)


def sign_in(page, base: str, username: str) -> None:
    """Sign in through the login page (test users' password is "pw-" + username)."""
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"pw-{username}")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
