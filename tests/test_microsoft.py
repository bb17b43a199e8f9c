"""Outlook through the same API and sync as Google, against the fake Microsoft (eager tasks)."""
import urllib.parse

import pytest
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import sync, tasks
from calendar_sync.models import AccessLog, CalendarToken, SyncRecord
from tests.helpers import MS_ACCOUNT, MS_REDIRECT, client_for, connect, landing

pytestmark = pytest.mark.django_db


@pytest.fixture
def outlook(fake_microsoft, api, run):
    """A member connected to Outlook; the fake's call log starts empty."""
    assert landing(run(connect, api, fake_microsoft))["calendar_sync"] == "connected"
    fake_microsoft.reset_log()
    return fake_microsoft


def methods(fake):
    return [c["method"] for c in fake.calls()]


def test_connect_status_calendars_choice_and_disconnect(fake_microsoft, fake_google, api, member):
    auth = api.get("/api/calendar-sync/auth/microsoft").json()["authorization_url"]
    parts = urllib.parse.urlsplit(auth)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert auth.startswith(f"{fake_microsoft.url}common/oauth2/v2.0/authorize?")
    assert query["scope"].split() == ["offline_access", "Calendars.ReadWrite"]
    assert query["code_challenge_method"] == "S256" and query["redirect_uri"] == MS_REDIRECT
    assert landing(connect(api, fake_microsoft))["calendar_sync"] == "connected"

    status = api.get("/api/calendar-sync/status").json()
    assert status["provider"] == "microsoft" and status["status"] == "active" and status["calendar_id"] == "primary"
    assert {p["name"] for p in status["providers"]} == {"google", "microsoft"}
    calendars = api.get("/api/calendar-sync/calendars").json()
    assert {c["summary"] for c in calendars} == {"Calendar", "Team"}  # Holidays is read-only
    assert [c["summary"] for c in calendars if c["primary"] and c["selected"]] == ["Calendar"]
    team = next(c["id"] for c in calendars if c["summary"] == "Team")
    assert api.put("/api/calendar-sync/calendar", {"calendar_id": team}, format="json").json()["calendar_id"] == team

    response = api.delete("/api/calendar-sync/disconnect")
    assert response.status_code == 200
    assert response.json() == {"disconnected": True, "revoked": False, "reason": "not_supported"}
    assert not CalendarToken.objects.exists()


def test_lifecycle_costs_three_graph_calls_and_reruns_none(outlook, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    events = outlook.events(MS_ACCOUNT)
    assert len(events) == 1
    (remote_id, event), = events.items()
    assert Booking.objects.get(pk=booking.pk).google_calendar_event_id == remote_id
    assert event["subject"] == "Deep work — The Loft" and event["location"]["displayName"] == "The Loft, 1 Harbour St, Lisbon"
    assert event["body"]["contentType"] == "text" and f"/bookings/{booking.pk}" in event["body"]["content"]
    assert event["start"]["timeZone"] == "GMT Standard Time"
    later = booking.start + timezone.timedelta(days=1)
    run(api.patch, f"/api/bookings/{booking.pk}/", {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=2)).isoformat()}, format="json")
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    assert outlook.events(MS_ACCOUNT) == {}
    assert methods(outlook) == ["POST", "PATCH", "DELETE"]
    graph = [r for r in outlook.http_requests if r["path"].startswith("/v1.0/")]
    assert len({r["client"] for r in graph}) == 1  # one kept-alive connection for all three
    for _ in range(3):
        tasks.sync_task.delay("booking", str(booking.pk))
    assert len(outlook.calls()) == 3


def test_lost_create_response_then_retry_leaves_one_event(outlook, api, member, make_booking, run):
    booking = make_booking(member)
    outlook.lose_response()
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")  # the create lands, its answer is lost
    assert SyncRecord.objects.get().state == "pending"
    assert len(outlook.events(MS_ACCOUNT)) == 1
    sync.sync_object("booking", booking.pk)  # the retry
    assert len(outlook.events(MS_ACCOUNT)) == 1
    record = SyncRecord.objects.get()
    assert record.state == "synced" and record.remote_id in outlook.events(MS_ACCOUNT)


def test_event_deleted_in_outlook_is_created_again(outlook, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    (old_id,) = outlook.events(MS_ACCOUNT)
    outlook.delete_event(outlook.default_account, old_id)
    tasks.resync_objects("booking", [booking])
    (new_id,) = outlook.events(MS_ACCOUNT)
    assert new_id != old_id and Booking.objects.get(pk=booking.pk).google_calendar_event_id == new_id


def test_throttled_create_is_retried_no_sooner_than_retry_after(outlook, api, member, make_booking, run):
    booking = make_booking(member)
    outlook.inject(429, times=1, retry_after=7)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    record = SyncRecord.objects.get()
    assert record.state == "pending" and record.retry_at is not None
    assert (record.retry_at - timezone.now()).total_seconds() > 5  # the sweeper will not come sooner
    assert "429" in record.last_error
    sync.sync_object("booking", booking.pk)
    assert len(outlook.events(MS_ACCOUNT)) == 1


def test_refresh_tokens_rotate_and_keep_working(outlook, api, member, make_booking, run):
    seen = set()
    for _ in range(3):
        token = CalendarToken.objects.get()
        seen.add(token.refresh_token)
        CalendarToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
        booking = make_booking(member, hours_from_now=24 + 3 * len(seen))
        run(api.post, f"/api/bookings/{booking.pk}/confirm/")
        assert SyncRecord.objects.get(object_id=str(booking.pk)).state == "synced"
    seen.add(CalendarToken.objects.get().refresh_token)
    assert len(seen) == 4  # each refresh stored the new refresh token; the superseded ones are refused
    assert AccessLog.objects.filter(operation="refresh", outcome="ok").count() == 3


def test_revoked_grant_needs_reauth_then_replays_after_reconnect(outlook, api, member, make_booking, run):
    outlook.revoke_grants(MS_ACCOUNT)
    CalendarToken.objects.update(expires_at=timezone.now())
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(3)]
    for b in bookings:
        run(api.post, f"/api/bookings/{b.pk}/confirm/")
    assert api.get("/api/calendar-sync/status").json()["status"] == "needs_reauth"
    assert outlook.events(MS_ACCOUNT) == {}
    token_calls = [r for r in outlook.http_requests if r["path"].endswith("/token")]
    assert len(token_calls) == 1  # marked once, no storm
    assert landing(run(connect, api, outlook))["calendar_sync"] == "connected"
    assert len(outlook.events(MS_ACCOUNT)) == 3


def test_backfill_of_120_bookings_uses_at_most_7_graph_requests(fake_microsoft, api, member, make_booking, run):
    for i in range(120):
        make_booking(member, hours_from_now=24 + 3 * i, status=Booking.Status.CONFIRMED)
    fake_microsoft.reset_log()
    assert landing(run(connect, api, fake_microsoft))["calendar_sync"] == "connected"
    assert len(fake_microsoft.events(MS_ACCOUNT)) == 120
    assert fake_microsoft.api_requests() <= 7 and fake_microsoft.max_batch_size <= 20
    assert set(SyncRecord.objects.values_list("state", flat=True)) == {"synced"}
    assert AccessLog.objects.filter(operation="batch", reason="backfill").exists()


def test_members_never_touch_each_others_mailbox(fake_microsoft, member, other, make_booking, run):
    alice, bob = client_for(member), client_for(other)
    run(connect, alice, fake_microsoft, account="alice@contoso.com")
    run(connect, bob, fake_microsoft, account="bob@contoso.com")
    mine = make_booking(member)
    run(alice.post, f"/api/bookings/{mine.pk}/confirm/")
    assert len(fake_microsoft.events("alice@contoso.com")) == 1 and fake_microsoft.events("bob@contoso.com") == {}
    assert {c["account"] for c in fake_microsoft.calls() if c["method"] == "POST"} == {"alice@contoso.com"}
    assert bob.post(f"/api/bookings/{mine.pk}/cancel/").status_code == 404


def test_switching_provider_moves_the_events(fake_google, fake_microsoft, api, member, make_booking, run):
    run(connect, api, fake_google)
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert len(fake_google.events("member@example.com")) == 1
    refused = run(connect, api, fake_microsoft, allow=False)
    assert landing(refused)["calendar_sync"] == "error"
    assert CalendarToken.objects.get().provider == "google"  # a failed switch keeps the old connection
    assert len(fake_google.events("member@example.com")) == 1
    assert landing(run(connect, api, fake_microsoft))["calendar_sync"] == "connected"
    assert fake_google.events("member@example.com") == {}
    assert len(fake_microsoft.events(MS_ACCOUNT)) == 1
    assert CalendarToken.objects.get().provider == "microsoft"


def test_tokens_are_ciphertext_and_never_shown(outlook, api, member, staff, client):
    from django.db import connection

    token = CalendarToken.objects.get()
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM calendar_sync_calendartoken")
        raw = cursor.fetchone()
    assert all(value.startswith("gAAAA") for value in raw)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    pages = [client.get("/admin/calendar_sync/calendartoken/").content, client.get(f"/admin/calendar_sync/calendartoken/{token.pk}/change/").content]
    pages += [api.get(p).content for p in ("/api/calendar-sync/status", "/api/calendar-sync/calendars", "/api/calendar-sync/activity")]
    for secret in (token.access_token, token.refresh_token):
        assert all(secret.encode() not in page for page in pages)


def test_activity_shows_the_lifecycle(outlook, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    later = booking.start + timezone.timedelta(hours=3)
    run(api.patch, f"/api/bookings/{booking.pk}/", {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()}, format="json")
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    rows = api.get("/api/calendar-sync/activity").json()["results"]
    writes = [(r["operation"], r["reason"], r["outcome"]) for r in rows if r["object_ref"] == f"booking:{booking.pk}"]
    assert writes == [("delete_event", "cancelled", "ok"), ("update_event", "rescheduled", "ok"), ("create_event", "confirmed", "ok")]
    assert all(r["provider"] == "microsoft" for r in rows)
    assert client_for(None).get("/api/calendar-sync/activity").status_code in (401, 403)
