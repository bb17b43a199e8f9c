"""Headless Chromium for the page tests: Debian's `chromium` driven by Playwright against the live server
and the fakes. Locally without chromium a browser test is skipped; in CI it fails instead."""

import shutil
from contextlib import contextmanager

import pytest

from tests.helpers import IN_CI

#: A member's desktop in Lisbon: the page tests' browser context (`open_page(..., **LISBON_DESKTOP)`).
LISBON_DESKTOP = {"timezone_id": "Europe/Lisbon", "locale": "en-GB", "viewport": {"width": 1280, "height": 1000}}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def open_page(live_server, settings, monkeypatch, **context):
    """A new page of a fresh Chromium, with the app's URLs pointing at `live_server`; `context` goes to
    Playwright's `new_context` (e.g. `timezone_id`, `viewport`)."""
    if not CHROMIUM:
        if IN_CI:
            pytest.fail("CI must run the browser test: Debian's chromium is missing")
        pytest.skip("needs Debian's chromium")
    from playwright.sync_api import sync_playwright

    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "GOOGLE_REDIRECT_URI": f"{live_server.url}/api/calendar-sync/auth/google/callback",
        "MICROSOFT_REDIRECT_URI": f"{live_server.url}/api/calendar-sync/auth/microsoft/callback",
        "FRONTEND_URL": f"{live_server.url}/integrations/calendar",
        "SHARED_FRONTEND_URL": f"{live_server.url}/integrations/rooms",
    }
    settings.CALENDAR_SYNC_SANDBOX = True
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the live server runs beside Playwright's loop
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_context(**context).new_page()
        finally:
            browser.close()


def said(page, text):
    """Wait until the page's outcome line says `text`: the page says it once it has read the status,
    after what the server rendered is already there."""
    from playwright.sync_api import expect  # as in open_page: only where a browser test runs

    expect(page.locator("#outcome")).to_contain_text(text)
