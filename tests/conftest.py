import os
import urllib.parse

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from bookings.models import Booking, Workspace
from calendar_sync.testing import FakeGoogle, FakeMicrosoft
from managehub.celery import app as celery_app

pytest_plugins = ["tests.stack"]  # the real-stack fixtures: broker_url, stack, connected, worker

IN_CI = bool(os.environ.get("CI"))
FRONTEND = "https://app.example.com/integrations/calendar"
REDIRECT = "https://testserver/api/calendar-sync/auth/google/callback"
GOOGLE_ACCOUNT = "member@example.com"
MS_REDIRECT = "https://testserver/api/calendar-sync/auth/microsoft/callback"
MS_ACCOUNT = "member@contoso.com"


@pytest.fixture(autouse=True, scope="session")
def eager_celery():
    """Unit tests run tasks in-process; tests marked `worker` use a real worker instead."""
    celery_app.conf.task_always_eager = True
    yield


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the cache: each test starts with none."""
    cache.clear()


@pytest.fixture(scope="session")
def google_server():
    with FakeGoogle() as google:
        yield google


@pytest.fixture
def fake_google(google_server, settings):
    google_server.reset()
    settings.DEBUG = True  # plain http to the loopback fake is allowed for connecting only in DEBUG
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        **google_server.settings(),
        "GOOGLE_REDIRECT_URI": REDIRECT,
        "FRONTEND_URL": FRONTEND,
    }
    return google_server


@pytest.fixture(scope="session")
def microsoft_server():
    with FakeMicrosoft() as microsoft:
        yield microsoft


@pytest.fixture
def fake_microsoft(microsoft_server, settings):
    microsoft_server.reset()
    settings.DEBUG = True
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        **microsoft_server.settings(),
        "MICROSOFT_REDIRECT_URI": MS_REDIRECT,
        "FRONTEND_URL": FRONTEND,
    }
    return microsoft_server


@pytest.fixture
def make_user(db):
    def make(username, **extra):
        return get_user_model().objects.create_user(username=username, password="pw-" + username, email=f"{username}@example.com", **extra)

    return make


@pytest.fixture
def member(make_user):
    return make_user("alice")


@pytest.fixture
def other(make_user):
    return make_user("bob")


@pytest.fixture
def staff(make_user):
    return make_user("staff", is_staff=True)


def client_for(user):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api(member):
    return client_for(member)


@pytest.fixture
def workspace(db):
    return Workspace.objects.create(name="The Loft", address="1 Harbour St, Lisbon", time_zone="Europe/Lisbon")


@pytest.fixture
def make_booking(workspace):
    def make(user, hours_from_now=24, duration=2, status=Booking.Status.PENDING, title="Deep work", ws=None):
        start = timezone.now().replace(microsecond=0) + timezone.timedelta(hours=hours_from_now)
        return Booking.objects.create(
            user=user, workspace=ws or workspace, title=title, start=start, end=start + timezone.timedelta(hours=duration), status=status
        )

    return make


def connect(client, fake, account=None, allow=True):
    """Walk the OAuth flow like a browser: API -> consent page -> callback. Returns the final redirect.

    `fake` is a FakeGoogle or a FakeMicrosoft; the provider follows from it. The test client keeps
    the flow cookie the first step sets, as the browser does, and shows it to the callback.
    """
    provider, redirect, default = ("microsoft", MS_REDIRECT, MS_ACCOUNT) if isinstance(fake, FakeMicrosoft) else ("google", REDIRECT, "member@example.com")
    response = client.get(f"/api/calendar-sync/auth/{provider}")
    assert response.status_code == 200, response.content
    location = fake.consent(response.json()["authorization_url"], account=account or default, allow=allow)
    assert location.startswith(redirect)
    query = urllib.parse.urlsplit(location).query
    return client.get(f"/api/calendar-sync/auth/{provider}/callback?{query}")


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


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Run an action and the Celery tasks its commit enqueues (eagerly)."""

    def go(action, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return action(*args, **kwargs)

    return go


@pytest.fixture
def google_connected(fake_google, api, run):
    """The fake Google, with the member (`api`) connected to it and its call log emptied."""
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    fake_google.reset_log()
    return fake_google
