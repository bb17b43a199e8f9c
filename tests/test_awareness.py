"""Calendar awareness, for Google and for Microsoft: busy times before confirming, rooms booked
outside ManageHub never double-booked, a test push, and dead grants found before they hurt."""

import urllib.parse

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from bookings.models import Booking
from calendar_sync.models import AccessLog, BusyBlock, CalendarToken
from tests.helpers import client_for, connect, landing

pytestmark = pytest.mark.django_db
HOUR = timezone.timedelta(hours=1)


@pytest.fixture(params=["google", "microsoft"])
def fake(request, fake_google, fake_microsoft):
    """Each test runs once against each fake, through the vocabulary both speak."""
    return fake_google if request.param == "google" else fake_microsoft


@pytest.fixture
def member_api(fake, api, run, member):
    member.email = "alice@example.com"
    member.save()
    assert landing(run(connect, api, fake, account=fake.default_account))["calendar_sync"] == "connected"
    fake.reset_log()
    return api


def window(start, end):
    return "/api/calendar-sync/busy?" + urllib.parse.urlencode({"start": start.isoformat(), "end": end.isoformat()})


def test_busy_times_show_the_members_other_meetings_not_ours(fake, member_api, member, make_booking, run):
    at = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)
    fake.add_event(fake.default_account, at, at + HOUR, title="Client call")
    booking = make_booking(member, hours_from_now=70, duration=1)
    run(member_api.post, f"/api/bookings/{booking.pk}/confirm/")  # our own event is in the calendar too
    answer = member_api.get(window(at - HOUR, at + 2 * HOUR)).json()
    assert answer["provider"] == fake.provider and answer["calendar_id"] == "primary" and answer["checked_at"]
    assert [
        (timezone.datetime.fromisoformat(b["start"]), timezone.datetime.fromisoformat(b["end"])) for b in answer["busy"]
    ] == [(at, at + HOUR)]
    assert member_api.get(window(at + 3 * HOUR, at + 4 * HOUR)).json()["busy"] == []
    ours = member_api.get(window(booking.start - HOUR, booking.end + HOUR)).json()["busy"]
    assert ours == []  # the member's own synced booking never conflicts with itself
    before = len(fake.calls())
    assert member_api.get(window(at - HOUR, at + 2 * HOUR)).json()["busy"]
    assert len(fake.calls()) == before  # the same window inside the TTL: no provider call


def test_busy_refuses_bad_windows_and_explains(fake, member_api, api, other):
    now = timezone.now()
    for start, end, field in ((now, now + timezone.timedelta(days=91), "end"), (now, now - HOUR, "end")):
        response = member_api.get(window(start, end))
        assert response.status_code == 400 and field in response.json()
    assert member_api.get("/api/calendar-sync/busy?start=yesterday&end=tomorrow").status_code == 400
    assert client_for(other).get(window(now, now + HOUR)).json()["code"] == "not_connected"


def test_busy_when_the_provider_is_down_or_the_grant_gone(fake, member_api):
    now = timezone.now()
    fake.inject(503, times=5)
    response = member_api.get(window(now, now + HOUR))
    assert response.status_code == 503 and response.json()["code"] == "provider_unavailable"
    fake.revoke_grants(fake.default_account)
    CalendarToken.objects.update(expires_at=timezone.now())
    response = member_api.get(window(now, now + 2 * HOUR))
    assert response.status_code == 409 and response.json()["code"] == "needs_reauth"


def test_confirming_reads_nothing(fake, member_api, member, make_booking, run):
    booking = make_booking(member)
    run(member_api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert [c["method"] for c in fake.calls()] == ["POST"]  # one write, no list, busy or free/busy read


def test_test_push_leaves_the_calendar_as_it_was(fake, member_api):
    before = fake.events(fake.default_account)
    response = member_api.post("/api/calendar-sync/test")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert fake.events(fake.default_account) == before
    assert [c["method"] for c in fake.calls()] == ["POST", "DELETE"]
    fake.revoke_grants(fake.default_account)
    CalendarToken.objects.update(expires_at=timezone.now())
    response = member_api.post("/api/calendar-sync/test")
    assert response.status_code == 409 and response.json()["code"] == "needs_reauth"


def test_revoked_grant_found_by_the_health_check_one_email(fake, member_api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "HEALTH_IDLE_SECONDS": 0}
    fake.revoke_grants(fake.default_account)
    mail.outbox.clear()
    call_command("calendar_sync_health", "--all")
    assert member_api.get("/api/calendar-sync/status").json()["status"] == "needs_reauth"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"] and "/integrations/calendar" in message.body
    call_command("calendar_sync_health", "--all")
    assert len(mail.outbox) == 1  # told once, not once per check or failed sync
    assert AccessLog.objects.filter(reason="health_check", operation="refresh").exclude(outcome="ok").count() == 1


def test_health_check_skips_recently_used_connections(fake, member_api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "HEALTH_IDLE_SECONDS": 3600}
    CalendarToken.objects.update(created_at=timezone.now() - timezone.timedelta(days=30))
    member_api.get("/api/calendar-sync/calendars")  # a use: leaves an access-log row
    fake.revoke_grants(fake.default_account)
    call_command("calendar_sync_health")
    assert CalendarToken.objects.get().status == "active"
    call_command("calendar_sync_health", "--all")
    assert CalendarToken.objects.get().status == "needs_reauth"


@pytest.fixture
def room_calendar(fake, staff, workspace, run):
    """The workspace's room calendar connected on `fake` by staff (account rooms@...)."""
    account = fake.room_account
    staff_api = client_for(staff)
    url = staff_api.get(f"/api/calendar-sync/shared/workspace/{workspace.pk}/auth/{fake.provider}").json()[
        "authorization_url"
    ]
    location = fake.consent(url, account=account)
    response = run(
        staff_api.get, f"/api/calendar-sync/auth/{fake.provider}/callback?{urllib.parse.urlsplit(location).query}"
    )
    assert "calendar_sync=connected" in response["Location"]
    fake.reset_log()
    return account


def test_room_booked_in_its_calendar_blocks_confirming_until_deleted(
    fake, room_calendar, api, member, make_booking, workspace, run
):
    booking = make_booking(member, hours_from_now=48, duration=2)
    outside = fake.add_event(room_calendar, booking.start + HOUR, booking.end + HOUR, title="Client call")
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    response = run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert response.status_code == 409 and response.json()["code"] == "overlap"
    assert "room calendar" in response.json()["detail"]
    assert Booking.objects.get(pk=booking.pk).status == "pending"
    fake.delete_event(room_calendar, outside)
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200


def test_pulls_are_incremental_recover_from_410_and_skip_our_events(
    fake, room_calendar, api, member, make_booking, workspace, run
):
    booking = make_booking(member, hours_from_now=30, duration=1)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")  # our event lands in the room calendar
    assert len(fake.events(room_calendar)) == 1
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert not BusyBlock.objects.exists()  # never imported
    fake.reset_log()
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert len(fake.calls()) == 1  # nothing changed: one small request
    at = booking.start + timezone.timedelta(days=1)
    fake.add_event(room_calendar, at, at + HOUR, title="Client call")
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert BusyBlock.objects.count() == 1 and BusyBlock.objects.get().summary == ""  # times only by default
    fake.expire_cursors()
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert BusyBlock.objects.count() == 1  # a full read after 410, same answer
    reschedule = {"start": (at + timezone.timedelta(minutes=30)).isoformat(), "end": (at + 2 * HOUR).isoformat()}
    response = run(api.patch, f"/api/bookings/{booking.pk}/", reschedule, format="json")
    assert response.status_code == 409 and response.json()["code"] == "overlap"


def test_shared_test_push_is_staff_only(fake, room_calendar, staff, api, workspace):
    assert client_for(staff).post(f"/api/calendar-sync/shared/workspace/{workspace.pk}/test").json() == {"ok": True}
    assert api.post(f"/api/calendar-sync/shared/workspace/{workspace.pk}/test").status_code == 403


def test_a_dead_room_connection_emails_whoever_connected_it(fake, room_calendar, staff, workspace, settings):
    staff.email = "ops@example.com"
    staff.save()
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "HEALTH_IDLE_SECONDS": 0}
    fake.revoke_grants(room_calendar)
    mail.outbox.clear()
    call_command("calendar_sync_health", "--all")
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]
    assert workspace.name in mail.outbox[0].body
