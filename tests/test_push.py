"""Push notifications for shared (room) calendars, for Google and for Microsoft: a channel is made
with our webhook address and a secret we can verify, a notification pulls the calendar at once,
forged ones are refused, channels are renewed before they expire and stopped on request.

The fakes deliver notifications over real HTTP, so the webhook runs in Django's live server."""

import urllib.parse

import pytest
import requests
from django.test import Client
from django.utils import timezone

from calendar_sync import channels, tasks
from calendar_sync.models import AccessLog, BusyBlock, CalendarToken
from managehub.celery import app as celery_app
from tests.helpers import GOOGLE_PATH, GRAPH_PATH, google_headers, room_on, set_push_url

HOUR = timezone.timedelta(hours=1)


@pytest.fixture(params=["google", "microsoft"])
def fake(request, fake_google, fake_microsoft):
    return fake_google if request.param == "google" else fake_microsoft


@pytest.fixture
def room(fake, staff, workspace):
    return room_on(fake, staff, workspace)


@pytest.fixture
def live(room, live_server, settings):
    """The room, with PUSH_URL pointing at the live server (plain http to loopback: DEBUG is on)."""
    set_push_url(settings, live_server.url)
    return room


def pulls():
    return AccessLog.objects.filter(operation=AccessLog.Operation.PULL, reason=AccessLog.Reason.PUSH).count()


def test_tasks_run_eagerly_here():
    assert celery_app.conf.task_always_eager  # a notification's pull runs inside the webhook request


# --- end to end, through the live server ------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_notification_pulls_the_room_calendar_at_once(live, live_server):
    token = live.token
    assert channels.ensure_watch(token) is True
    token = live.token
    channel = live.fake.push_channels()[token.push_channel]
    address, secret, stopped = channel["address"], channel["secret"], channel["stopped"]
    assert address == f"{live_server.url}/api/calendar-sync/push/{live.fake.provider}"
    assert secret == channels.channel_secret(token) and len(secret) == 64 and not stopped
    lifetime = token.push_expires_at - timezone.now()
    if live.fake.provider == "google":
        assert token.push_resource and timezone.timedelta(days=6) < lifetime <= timezone.timedelta(days=7)
    else:
        assert token.push_resource == "" and timezone.timedelta(minutes=4100) < lifetime <= timezone.timedelta(
            minutes=4230
        )
        assert live.fake.push_channels()[token.push_channel]["resource"] == "me/events"
        assert live.fake.subscriptions[token.push_channel]["changeType"] == "created,updated,deleted"
    at = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)
    event_id = live.fake.add_event(live.fake.room_account, at, at + HOUR, title="Client call")
    assert not BusyBlock.objects.exists()
    if live.fake.provider == "google":  # the channel's first message: nothing to read yet
        response = live.fake.notify(token.push_channel, state="sync")
        assert response.status_code == 200 and response.json() == {}
        assert not BusyBlock.objects.exists()
    response = live.fake.notify(token.push_channel, event_id)
    assert response.status_code == (200 if live.fake.provider == "google" else 202), response.text
    block = BusyBlock.objects.get()  # pulled by the webhook, no scheduled pull ran
    assert (block.start, block.end, block.owner_kind, block.owner_id) == (
        at,
        at + HOUR,
        "workspace",
        str(live.workspace.pk),
    )
    assert (
        AccessLog.objects.filter(operation="pull_changes", reason="push_notification", outcome="ok").count() >= 2
    )  # watch + pull


@pytest.mark.django_db(transaction=True)
def test_forged_notifications_are_refused_and_pull_nothing(live, live_server):
    channels.ensure_watch(live.token)
    token = live.token
    live.fake.add_event(
        live.fake.room_account,
        timezone.now() + timezone.timedelta(days=1),
        timezone.now() + timezone.timedelta(days=1, hours=1),
        title="Client call",
    )
    before = pulls()
    address = f"{live_server.url}{GOOGLE_PATH if live.fake.provider == 'google' else GRAPH_PATH}"
    response = live.fake.notify(token.push_channel, secret="f" * 64)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    if live.fake.provider == "google":
        headers = {
            "X-Goog-Channel-ID": "not-ours",
            "X-Goog-Channel-Token": channels.channel_secret(token),
            "X-Goog-Resource-State": "exists",
            "X-Goog-Resource-ID": token.push_resource,
        }
        response = requests.post(address, headers=headers, timeout=10)
    else:
        item = {
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "clientState": channels.channel_secret(token),
            "changeType": "updated",
        }
        response = requests.post(address, json={"value": [item]}, timeout=10)
    assert response.status_code == 403 and response.json() == {"code": "forbidden", "detail": response.json()["detail"]}
    assert not BusyBlock.objects.exists() and pulls() == before


@pytest.mark.django_db(transaction=True)
def test_stop_watch_stops_the_channel_at_the_provider(live):
    channels.ensure_watch(live.token)
    token = live.token
    channel = token.push_channel
    assert channels.stop_watch(token) is True
    assert live.fake.push_channels()[channel]["stopped"]  # stopped at Google / subscription deleted at Graph
    token = live.token
    assert (token.push_channel, token.push_resource, token.push_expires_at) == ("", "", None)
    assert live.fake.notify(channel) is None  # the provider sends nothing more
    assert channels.stop_watch(token) is False  # nothing left to stop


@pytest.mark.django_db(transaction=True)
def test_graph_validation_handshake_when_subscribing(fake_microsoft, staff, workspace, live_server, settings):
    room = room_on(fake_microsoft, staff, workspace)
    set_push_url(settings, live_server.url)
    fake_microsoft.validate_subscriptions = True
    try:
        assert channels.ensure_watch(room.token) is True  # the fake POSTed ?validationToken= to the live webhook
        assert room.token.push_channel in fake_microsoft.subscriptions
        channels.stop_watch(room.token)
        set_push_url(settings, "http://127.0.0.1:9")  # nobody answers there: Graph refuses the subscription
        assert channels.ensure_watch(room.token) is False
        assert room.token.push_channel == ""
        assert AccessLog.objects.filter(
            operation="pull_changes", reason="push_notification", outcome="ValidationError"
        ).exists()
    finally:
        fake_microsoft.validate_subscriptions = False


# --- channels: made, kept, renewed, refused ----------------------------------------------------------
@pytest.fixture
def pushing(room, settings):
    """PUSH_URL set to a loopback address nobody serves (Google does not call back when watching)."""
    set_push_url(settings, "http://127.0.0.1:9")
    return room


@pytest.mark.django_db
def test_a_live_channel_is_kept_and_one_near_expiry_renewed(pushing):
    room = pushing
    assert channels.ensure_watch(room.token)
    first = room.token.push_channel
    assert (
        channels.ensure_watch(room.token) and room.token.push_channel == first and len(room.fake.push_channels()) == 1
    )  # nothing to do
    CalendarToken.objects.update(push_expires_at=timezone.now() + 2 * HOUR)
    assert channels.ensure_watch(room.token)
    token = room.token
    assert token.push_channel != first and token.push_expires_at > timezone.now() + timezone.timedelta(days=2)
    assert (
        room.fake.push_channels()[first]["stopped"] and not room.fake.push_channels()[token.push_channel]["stopped"]
    )  # the old one stopped, the new one live
    second = token.push_channel
    assert channels.ensure_watch(token, force=True)  # e.g. the calendar changed
    assert room.token.push_channel not in (first, second) and room.fake.push_channels()[second]["stopped"]


@pytest.mark.django_db
def test_the_renew_task_watches_every_active_shared_connection(pushing):
    room = pushing
    assert tasks.renew_push_task.delay().get() == 1
    first = room.token.push_channel
    assert first in room.fake.push_channels()
    assert tasks.renew_push_task.delay().get() == 0 and room.token.push_channel == first  # still live: untouched
    assert (
        channels.renew_all(force=True) == 1
        and room.token.push_channel != first
        and room.fake.push_channels()[first]["stopped"]
    )  # PUSH_URL moved
    CalendarToken.objects.update(status=CalendarToken.Status.NEEDS_REAUTH, push_channel="", push_expires_at=None)
    assert tasks.renew_push_task.delay().get() == 0 and len(room.fake.push_channels()) == 2


@pytest.mark.django_db
def test_no_channel_without_a_usable_push_url_or_for_members(room, settings, member):
    for url in ("", "http://push.example.com", "ftp://127.0.0.1/"):
        set_push_url(settings, url)
        assert channels.ensure_watch(room.token) is False and channels.renew_all() == 0
    set_push_url(settings, "http://127.0.0.1:9")
    settings.DEBUG = False  # plain http to loopback only in DEBUG
    assert channels.ensure_watch(room.token) is False
    assert not room.fake.push_channels() and not AccessLog.objects.filter(reason="push_notification").exists()
    settings.DEBUG = True
    personal = CalendarToken.objects.create(
        user=member, owner_kind="user", provider=room.fake.provider, access_token="a", refresh_token="r"
    )
    assert channels.ensure_watch(personal) is False and not room.fake.push_channels()


@pytest.mark.django_db
def test_provider_errors_are_logged_never_raised(pushing):
    room = pushing
    room.fake.inject(503, times=1, path="/calendar/" if room.fake.provider == "google" else "/v1.0/subscriptions")
    assert channels.ensure_watch(room.token) is False
    assert room.token.push_channel == "" and not room.fake.push_channels()
    assert (
        AccessLog.objects.filter(operation="pull_changes", reason="push_notification").exclude(outcome="ok").count()
        == 1
    )
    assert channels.ensure_watch(room.token) is True  # the next try (the renew task) makes it
    token = room.token
    room.fake.inject(503, times=1, path="/calendar/" if room.fake.provider == "google" else "/v1.0/subscriptions")
    assert channels.stop_watch(token) is True and room.token.push_channel == ""  # forgotten locally even so


@pytest.mark.django_db
def test_stopping_a_channel_the_provider_already_dropped_is_fine(pushing):
    room = pushing
    channels.ensure_watch(room.token)
    token = room.token
    room.fake.drop_channel(token.push_channel)
    assert channels.stop_watch(token) is True
    assert AccessLog.objects.filter(reason="push_notification").exclude(outcome="ok").count() == 0  # 404 = already gone


# --- the webhook, whatever arrives -----------------------------------------------------------------
@pytest.mark.django_db
def test_google_webhook_checks_channel_token_and_resource(fake_google, staff, workspace, settings):
    set_push_url(settings, "http://127.0.0.1:9")
    room = room_on(fake_google, staff, workspace)
    channels.ensure_watch(room.token)
    token, client = room.token, Client()
    for bad in (
        {"channel_token": "x"},
        {"channel_token": ""},
        {"channel_id": "nope"},
        {"channel_id": "x" * 300},
        {"resource_id": "other"},
        {"channel_token": "é" * 64},
    ):
        response = client.post(GOOGLE_PATH, **google_headers(token, **bad))
        assert response.status_code == 403 and response.json()["code"] == "forbidden", bad
    assert client.post(GOOGLE_PATH).status_code == 403  # no headers at all
    before = pulls()
    assert client.post(GOOGLE_PATH, **google_headers(token, resource_state="sync")).json() == {}
    assert pulls() == before
    response = client.post(GOOGLE_PATH + "/", **google_headers(token, resource_state="not_exists"))
    assert response.status_code == 200 and pulls() == before + 1
    assert client.get(GOOGLE_PATH, **google_headers(token)).status_code == 405
    assert client.post("/api/calendar-sync/push/yahoo").status_code == 404
    CalendarToken.objects.update(status=CalendarToken.Status.NEEDS_REAUTH)
    assert (
        client.post(GOOGLE_PATH, **google_headers(token)).status_code == 200 and pulls() == before + 1
    )  # nothing to pull with


@pytest.mark.django_db
def test_channels_made_before_a_key_rotation_still_verify(fake_google, staff, workspace, settings):
    set_push_url(settings, "http://127.0.0.1:9")
    room = room_on(fake_google, staff, workspace)
    channels.ensure_watch(room.token)
    token, client = room.token, Client()
    headers = google_headers(token)
    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a-new-secret-key-" + "x" * 40, [old]
    before = pulls()
    assert client.post(GOOGLE_PATH, **headers).status_code == 200 and pulls() == before + 1
    settings.SECRET_KEY_FALLBACKS = []
    assert client.post(GOOGLE_PATH, **headers).status_code == 403


@pytest.mark.django_db
def test_graph_webhook_handshake_and_bodies_of_any_shape(fake_microsoft, staff, workspace, settings):
    set_push_url(settings, "http://127.0.0.1:9")
    room = room_on(fake_microsoft, staff, workspace)
    channels.ensure_watch(room.token)
    token, client = room.token, Client()
    challenge = "Validation: Testing client application reachability for subscription Request-Id: 1+2/3=?&é"
    response = client.post(f"{GRAPH_PATH}?validationToken={urllib.parse.quote(challenge)}", content_type="text/plain")
    assert response.status_code == 200 and response.content.decode() == challenge
    assert response["Content-Type"].startswith("text/plain") and response["X-Content-Type-Options"] == "nosniff"
    assert client.post(f"{GRAPH_PATH}?validationToken={'a' * 2048}").content == b"a" * 2048
    for bad in ("a" * 2049, "", "line\nbreak", "\x00", "<script>\x1b"):
        response = client.post(f"{GRAPH_PATH}?validationToken={urllib.parse.quote(bad)}")
        assert response.status_code == 400 and response.json()["code"] == "invalid", bad
    good = {
        "subscriptionId": token.push_channel,
        "clientState": channels.channel_secret(token),
        "changeType": "created",
        "resource": "Users/x/Events/y",
    }
    before = pulls()
    bodies = [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[" * 100_000,
        b"null",
        b"[]",
        b"{}",
        b'{"value": "x"}',
        b'{"value": [1, null, "x", []]}',
        {"value": [{"subscriptionId": 5, "clientState": {}}]},
        {"value": [{**good, "clientState": None}]},
        {"value": [{**good, "clientState": "x" * 64}]},
        {"value": [{**good, "subscriptionId": "x" * 1000}]},
        {"value": [{**good, "subscriptionId": ["a"]}]},
    ]
    for body in bodies:
        response = client.post(GRAPH_PATH, body, content_type="application/json")
        assert response.status_code in (400, 403) and response.json()["code"] in ("invalid", "forbidden"), body
    assert pulls() == before
    response = client.post(
        GRAPH_PATH, {"value": [good, good, {**good, "clientState": "forged"}]}, content_type="application/json"
    )
    assert response.status_code == 202 and pulls() == before + 1  # one pull per connection, forged items ignored
    assert client.get(GRAPH_PATH).status_code == 405
