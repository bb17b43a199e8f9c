import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from bookings.models import Booking, Workspace
from calendar_sync import tasks
from calendar_sync.providers.microsoft import MicrosoftProvider
from calendar_sync.testing import FakeGoogle, FakeMicrosoft
from managehub.celery import app as celery_app
from tests.helpers import (
    FRONTEND,
    MS_ACCOUNT,
    MS_REDIRECT,
    REDIRECT,
    client_for,
    connect,
    forget_quotas,
    grant,
    landing,
)

pytest_plugins = ["tests.stack"]  # the real-stack fixtures: broker_url, stack, connected, worker


@pytest.fixture(autouse=True, scope="session")
def eager_celery():
    """Unit tests run tasks in-process; tests marked `worker` use a real worker instead."""
    celery_app.conf.task_always_eager = True
    yield


@pytest.fixture(autouse=True, scope="session")
def fast_password_hasher():
    """Django's default hasher spends half a second per password by design; the tests create and sign in
    hundreds of users, so they hash with MD5 (Django's advice for tests). The hasher is the only change."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the cache, provider quotas in this process: each test starts with none."""
    cache.clear()
    forget_quotas()


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
        return get_user_model().objects.create_user(
            username=username, password="pw-" + username, email=f"{username}@example.com", **extra
        )

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
            user=user,
            workspace=ws or workspace,
            title=title,
            start=start,
            end=start + timezone.timedelta(hours=duration),
            status=status,
        )

    return make


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


@pytest.fixture
def outlook(fake_microsoft, api, run):
    """A member connected to Outlook; the fake's call log starts empty."""
    assert landing(run(connect, api, fake_microsoft))["calendar_sync"] == "connected"
    fake_microsoft.reset_log()
    return fake_microsoft


@pytest.fixture
def pull(run, member):
    """Run the pull of the member's write calendar, as beat or a notification enqueues it."""

    def go():
        return run(tasks.pull_task.delay, "user", str(member.pk)).get()

    return go


@pytest.fixture
def booked(member_api, member, make_booking, run, pull):
    """A confirmed booking in the member's calendar (`member_api`: the test module's connected member's
    client), pulled once (the cursor is set); no mail yet."""
    booking = make_booking(member, hours_from_now=48, duration=2)
    assert run(member_api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    assert pull()["reported"] == 0
    mail.outbox.clear()
    return Booking.objects.get(pk=booking.pk)


@pytest.fixture
def ms_provider(fake_microsoft):
    """MicrosoftProvider, pointed at the fake Microsoft."""
    return MicrosoftProvider()


@pytest.fixture
def ms_tokens(ms_provider, fake_microsoft):
    """The member's TokenSet, after consent on the fake Microsoft."""
    return grant(fake_microsoft, ms_provider)


@pytest.fixture
def ms_calendar(fake_microsoft):
    """The id of the member's default Outlook calendar."""
    return fake_microsoft.calendar_id(MS_ACCOUNT)


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """SQLite's test file skips fsync: a crash of the machine may lose it, which a throwaway database
    allows; creating it (every migration commits) and the transactional tests' flushes wait on the
    disk otherwise. Locking and transactions are unchanged."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("OPTIONS", {})["init_command"] = "PRAGMA synchronous=OFF"
