"""What the tests share that is not a fixture: the constants and the steps a browser or staff take.

Fixtures live in conftest.py (pytest finds them there); test files import these from here.
"""

import base64
import hashlib
import os
import secrets
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import redis
from django.db.models import F
from django.utils import timezone
from rest_framework.test import APIClient

from calendar_sync import channels, quotas
from calendar_sync.conf import get_setting
from calendar_sync.models import CalendarToken, SyncRecord
from calendar_sync.sources import get_source
from calendar_sync.testing import FakeMicrosoft

IN_CI = bool(os.environ.get("CI"))
FRONTEND = "https://app.example.com/integrations/calendar"
REDIRECT = "https://testserver/api/calendar-sync/auth/google/callback"
GOOGLE_ACCOUNT = "member@example.com"
MS_REDIRECT = "https://testserver/api/calendar-sync/auth/microsoft/callback"
MS_ACCOUNT = "member@contoso.com"
ROOM_ACCOUNT = "rooms@example.com"
LISBON = ZoneInfo("Europe/Lisbon")
GOOGLE_PATH = "/api/calendar-sync/push/google"
GRAPH_PATH = "/api/calendar-sync/push/microsoft"


def client_for(user):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def connect(client, fake, account=None, allow=True, add=False):
    """Walk the OAuth flow like a browser: API -> consent page -> callback. Returns the final redirect.

    `fake` is a FakeGoogle or a FakeMicrosoft; the provider follows from it. The test client keeps
    the flow cookie the first step sets, as the browser does, and shows it to the callback.
    `add` connects an additional account instead of replacing the write connection.
    """
    provider, redirect, default = (
        ("microsoft", MS_REDIRECT, MS_ACCOUNT)
        if isinstance(fake, FakeMicrosoft)
        else ("google", REDIRECT, "member@example.com")
    )
    response = client.get(f"/api/calendar-sync/auth/{provider}" + ("?add=1" if add else ""))
    assert response.status_code == 200, response.content
    location = fake.consent(response.json()["authorization_url"], account=account or default, allow=allow)
    assert location.startswith(redirect)
    query = urllib.parse.urlsplit(location).query
    return client.get(f"/api/calendar-sync/auth/{provider}/callback?{query}")


def connect_room(client, fake, workspace, account=None, allow=True):
    """Staff connect a workspace's calendar on `fake` (as its room account unless told): the consent URL
    comes from the shared root, the callback is the provider's. Returns the callback's response."""
    response = client.get(f"/api/calendar-sync/shared/workspace/{workspace.pk}/auth/{fake.provider}")
    assert response.status_code == 200, response.content
    location = fake.consent(response.json()["authorization_url"], account=account or fake.room_account, allow=allow)
    return client.get(f"/api/calendar-sync/auth/{fake.provider}/callback?{urllib.parse.urlsplit(location).query}")


@dataclass
class Room:
    """A workspace's room calendar, connected on `fake` as its room account."""

    fake: object
    workspace: object

    @property
    def token(self):
        return CalendarToken.objects.get(owner_kind="workspace", owner_id=str(self.workspace.pk))


def room_on(fake, staff, workspace):
    """`staff` connect the workspace's calendar on `fake` as its room account: the Room."""
    response = connect_room(client_for(staff), fake, workspace)
    assert "calendar_sync=connected" in response["Location"]
    return Room(fake, workspace)


def set_push_url(settings, url):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "PUSH_URL": url}


def google_headers(token, **override):
    """The headers of a Google push notification on `token`'s channel, with `override`s."""
    headers = {
        "HTTP_X_GOOG_CHANNEL_ID": token.push_channel,
        "HTTP_X_GOOG_CHANNEL_TOKEN": channels.channel_secret(token),
        "HTTP_X_GOOG_RESOURCE_ID": token.push_resource,
        "HTTP_X_GOOG_RESOURCE_STATE": "exists",
    }
    headers.update({f"HTTP_X_GOOG_{k.upper()}": v for k, v in override.items()})
    return headers


def event_key(booking, destination="member"):
    return get_source("booking").event_id(booking.pk, destination)


def same_browser(client):
    """An anonymous client with `client`'s cookies (the flow cookie): the member's browser without a session."""
    browser = APIClient()
    browser.cookies.update(client.cookies)
    return browser


def landing(response):
    """The query parameters of the callback's redirect to the frontend."""
    assert response.status_code == 302, response.content
    assert response["Location"].startswith(FRONTEND)
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(response["Location"]).query))


def pkce():
    """A PKCE pair (RFC 7636, S256): the verifier and its challenge."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def grant(fake, provider, account=None):
    """Consent on the fake as `account` and redeem the code: the provider's TokenSet."""
    verifier, challenge = pkce()
    location = fake.consent(provider.authorization_url(state="st", code_challenge=challenge), account=account)
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    return provider.exchange_code(code=code, code_verifier=verifier)


def settled(bookings):
    """Every booking's record is synced at its latest version."""
    ids = [str(b.pk) for b in bookings]
    return SyncRecord.objects.filter(object_id__in=ids, state="synced", synced_version=F("version")).count() == len(ids)


def forget_quotas():
    """Start with no provider-quota counts or throttle marks: this process's, and the quota Redis's
    (connection keys are primary keys, which a new test database hands out again)."""
    quotas.reset()
    uri = str(get_setting("QUOTA_STORAGE"))
    if uri.startswith(("redis://", "rediss://")):
        client = redis.Redis.from_url(uri, socket_connect_timeout=1, socket_timeout=1)
        try:
            stale = [*client.scan_iter("LIMITS*calendar_sync:quota*"), *client.scan_iter("calendar_sync:quota*")]
            if stale:
                client.delete(*stale)
        except redis.RedisError:
            pass  # no quota Redis here: the governor falls back on its own


def next_monday(at=time(9)):
    """The first Monday at least a day ahead, at `at` Lisbon time (a series' first occurrence)."""
    day = (timezone.now().astimezone(LISBON) + timedelta(days=1)).date()
    day += timedelta(days=(7 - day.weekday()) % 7)
    return datetime.combine(day, at, tzinfo=LISBON)
