"""Test helpers for integrators: a fake Google (OAuth + Calendar v3) and a fake Microsoft
(identity platform v2.0 + Graph v1.0), each a real HTTP server on 127.0.0.1, and the settings
that point the app at them.

    from calendar_sync.testing import FakeGoogle, connect, use_fakes
    with FakeGoogle() as google, use_fakes(google):
        connect(client, google)          # the signed-in member of `client` consents on the fake
        ...
        assert google.events("member@example.com")

Plain http to loopback is accepted for connecting only with DEBUG on, so `use_fakes` turns it on
(calls with an existing grant accept it always). Run both for a sandbox with
`python -m calendar_sync.testing`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.test import override_settings
from django.urls import reverse

from .fake_google import FakeGoogle
from .fake_microsoft import FakeMicrosoft

__all__ = ["FakeGoogle", "FakeMicrosoft", "connect", "fake_settings", "use_fakes"]

#: Django's test client sends requests to this host; the redirect URIs point at it.
TEST_SERVER = "https://testserver"


def fake_settings(*fakes: FakeGoogle | FakeMicrosoft, server: str = TEST_SERVER) -> dict[str, Any]:
    """CALENDAR_SYNC entries that point the app at these running fakes: their client, endpoints,
    and a redirect URI at this project's callback on `server`. Merge them into CALENDAR_SYNC."""
    entries: dict[str, Any] = {}
    for fake in fakes:
        provider = fake.provider
        callback = reverse("calendar_sync:callback", kwargs={"provider": provider})
        entries.update(fake.settings())
        entries[f"{provider.upper()}_REDIRECT_URI"] = f"{server}{callback}"
    return entries


def use_fakes(*fakes: FakeGoogle | FakeMicrosoft, **overrides: Any) -> override_settings:
    """override_settings (a context manager or decorator) with DEBUG on and CALENDAR_SYNC =
    the project's own + `fake_settings(*fakes)` + `overrides` (e.g. SYNC_MODE="inline")."""
    current = getattr(settings, "CALENDAR_SYNC", {})
    return override_settings(DEBUG=True, CALENDAR_SYNC={**current, **fake_settings(*fakes), **overrides})


def connect(
    client: Any, fake: FakeGoogle | FakeMicrosoft, account: str | None = None, allow: bool = True, add: bool = False
) -> Any:
    """Connect the member signed in on `client` (a Django or DRF test client) the way a browser does:
    ask for the consent URL, consent on the fake as `account`, follow the redirect to the callback.
    `add` connects it as an additional account (else it replaces the member's write connection).
    Returns the callback's response (a 302 to FRONTEND_URL with `calendar_sync=connected` or `=error`)."""
    provider = fake.provider
    url = reverse("calendar_sync:authorize", kwargs={"provider": provider})
    response = client.get(url + ("?add=1" if add else ""))
    assert response.status_code == 200, response.content
    extra = {"account": account} if account else {}
    location = urlsplit(fake.consent(response.json()["authorization_url"], allow=allow, **extra))
    return client.get(f"{location.path}?{location.query}")
