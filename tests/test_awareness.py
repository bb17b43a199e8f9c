"""Calendar awareness, for Google and for Microsoft: busy times before confirming, rooms booked
outside ManageHub never double-booked, a test push, and dead grants found before they hurt."""
import urllib.parse
from dataclasses import dataclass

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from bookings.models import Booking
from calendar_sync.models import AccessLog, BusyBlock, CalendarToken
from calendar_sync.testing import FakeGoogle
from tests.conftest import MS_ACCOUNT, client_for, connect, landing

pytestmark = pytest.mark.django_db
HOUR = timezone.timedelta(hours=1)


@dataclass
class Calendar:
    """One provider's fake, seen the way these tests need it."""

    fake: object
    provider: str
    account: str

    def add(self, account, start, end):
        if isinstance(self.fake, FakeGoogle):
            return self.fake.add_event(account, start, end, summary="Client call")
        return self.fake.add_event(account, start, end, subject="Client call")

    def delete(self, account, event_id):
        self.fake.delete_event(account, event_id)

    def expire_cursors(self):
        (self.fake.expire_sync_tokens if isinstance(self.fake, FakeGoogle) else self.fake.expire_delta_tokens)()

    def calls(self):
        return self.fake.api_calls() if isinstance(self.fake, FakeGoogle) else self.fake.graph_calls()

    def reset_log(self):
        self.fake.reset_log()

    def events(self, account):
        return self.fake.events(account)

    def revoke(self, account):
        self.fake.revoke_grants(account)


@pytest.fixture(params=["google", "microsoft"])
def cal(request, fake_google, fake_microsoft):
    if request.param == "google":
        return Calendar(fake_google, "google", "member@example.com")
    return Calendar(fake_microsoft, "microsoft", MS_ACCOUNT)


@pytest.fixture
def member_api(cal, api, run, member):
    member.email = "alice@example.com"
    member.save()
    assert landing(run(connect, api, cal.fake, account=cal.account))["calendar_sync"] == "connected"
    cal.reset_log()
    return api


def window(start, end):
    return "/api/calendar-sync/busy?" + urllib.parse.urlencode({"start": start.isoformat(), "end": end.isoformat()})


def test_busy_times_show_the_members_other_meetings_not_ours(cal, member_api, member, make_booking, run):
    at = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)
    cal.add(cal.account, at, at + HOUR)
    booking = make_booking(member, hours_from_now=70, duration=1)
    run(member_api.post, f"/api/bookings/{booking.pk}/confirm/")  # our own event is in the calendar too
    answer = member_api.get(window(at - HOUR, at + 2 * HOUR)).json()
    assert answer["provider"] == cal.provider and answer["calendar_id"] == "primary" and answer["checked_at"]
    assert [(timezone.datetime.fromisoformat(b["start"]), timezone.datetime.fromisoformat(b["end"])) for b in answer["busy"]] == [(at, at + HOUR)]
    assert member_api.get(window(at + 3 * HOUR, at + 4 * HOUR)).json()["busy"] == []
    ours = member_api.get(window(booking.start - HOUR, booking.end + HOUR)).json()["busy"]
    assert ours == []  # the member's own synced booking never conflicts with itself
    before = len(cal.calls())
    assert member_api.get(window(at - HOUR, at + 2 * HOUR)).json()["busy"]
    assert len(cal.calls()) == before  # the same window inside the TTL: no provider call


def test_busy_refuses_bad_windows_and_explains(cal, member_api, api, other):
    now = timezone.now()
    for start, end, field in ((now, now + timezone.timedelta(days=91), "end"), (now, now - HOUR, "end")):
        response = member_api.get(window(start, end))
        assert response.status_code == 400 and field in response.json()
    assert member_api.get("/api/calendar-sync/busy?start=yesterday&end=tomorrow").status_code == 400
    assert client_for(other).get(window(now, now + HOUR)).json()["code"] == "not_connected"


def test_busy_when_the_provider_is_down_or_the_grant_gone(cal, member_api):
    now = timezone.now()
    cal.fake.inject(503, times=5, path="/calendar/" if cal.provider == "google" else "/v1.0/")
    response = member_api.get(window(now, now + HOUR))
    assert response.status_code == 503 and response.json()["code"] == "provider_unavailable"
    cal.revoke(cal.account)
    CalendarToken.objects.update(expires_at=timezone.now())
    response = member_api.get(window(now, now + 2 * HOUR))
    assert response.status_code == 409 and response.json()["code"] == "needs_reauth"


def test_confirming_reads_nothing(cal, member_api, member, make_booking, run):
    booking = make_booking(member)
    run(member_api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert [c["method"] for c in cal.calls()] == ["POST"]  # one write, no list, busy or free/busy read


def test_test_push_leaves_the_calendar_as_it_was(cal, member_api):
    before = cal.events(cal.account)
    response = member_api.post("/api/calendar-sync/test")
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert cal.events(cal.account) == before
    assert [c["method"] for c in cal.calls()] == ["POST", "DELETE"]
    cal.revoke(cal.account)
    CalendarToken.objects.update(expires_at=timezone.now())
    response = member_api.post("/api/calendar-sync/test")
    assert response.status_code == 409 and response.json()["code"] == "needs_reauth"


def test_revoked_grant_found_by_the_health_check_one_email(cal, member_api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "HEALTH_IDLE_SECONDS": 0}
    cal.revoke(cal.account)
    mail.outbox.clear()
    call_command("calendar_sync_health", "--all")
    assert member_api.get("/api/calendar-sync/status").json()["status"] == "needs_reauth"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"] and "/integrations/calendar" in message.body
    call_command("calendar_sync_health", "--all")
    assert len(mail.outbox) == 1  # told once, not once per check or failed sync
    assert AccessLog.objects.filter(reason="health_check", operation="refresh").exclude(outcome="ok").count() == 1


def test_health_check_skips_recently_used_connections(cal, member_api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "HEALTH_IDLE_SECONDS": 3600}
    CalendarToken.objects.update(created_at=timezone.now() - timezone.timedelta(days=30))
    member_api.get("/api/calendar-sync/calendars")  # a use: leaves an access-log row
    cal.revoke(cal.account)
    call_command("calendar_sync_health")
    assert CalendarToken.objects.get().status == "active"
    call_command("calendar_sync_health", "--all")
    assert CalendarToken.objects.get().status == "needs_reauth"


@pytest.fixture
def room_calendar(cal, staff, workspace, run):
    """The workspace's room calendar connected on `cal` by staff (account rooms@...)."""
    account = "rooms@example.com" if cal.provider == "google" else "rooms@contoso.com"
    cal.fake.add_account(account)
    staff_api = client_for(staff)
    url = staff_api.get(f"/api/calendar-sync/shared/workspace/{workspace.pk}/auth/{cal.provider}").json()["authorization_url"]
    location = cal.fake.consent(url, account=account)
    response = run(staff_api.get, f"/api/calendar-sync/auth/{cal.provider}/callback?{urllib.parse.urlsplit(location).query}")
    assert "calendar_sync=connected" in response["Location"]
    cal.reset_log()
    return account


def test_room_booked_in_its_calendar_blocks_confirming_until_deleted(cal, room_calendar, api, member, make_booking, workspace, run):
    booking = make_booking(member, hours_from_now=48, duration=2)
    outside = cal.add(room_calendar, booking.start + HOUR, booking.end + HOUR)
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    response = run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    assert response.status_code == 409 and response.json()["code"] == "overlap"
    assert "room calendar" in response.json()["detail"]
    assert Booking.objects.get(pk=booking.pk).status == "pending"
    cal.delete(room_calendar, outside)
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200


def test_pulls_are_incremental_recover_from_410_and_skip_our_events(cal, room_calendar, api, member, make_booking, workspace, run):
    booking = make_booking(member, hours_from_now=30, duration=1)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")  # our event lands in the room calendar
    assert len(cal.events(room_calendar)) == 1
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert not BusyBlock.objects.exists()  # never imported
    cal.reset_log()
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert len(cal.calls()) == 1  # nothing changed: one small request
    at = booking.start + timezone.timedelta(days=1)
    cal.add(room_calendar, at, at + HOUR)
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert BusyBlock.objects.count() == 1 and BusyBlock.objects.get().summary == ""  # times only by default
    cal.expire_cursors()
    call_command("calendar_sync_pull", "--owner", f"workspace:{workspace.pk}")
    assert BusyBlock.objects.count() == 1  # a full read after 410, same answer
    reschedule = {"start": (at + timezone.timedelta(minutes=30)).isoformat(), "end": (at + 2 * HOUR).isoformat()}
    response = run(api.patch, f"/api/bookings/{booking.pk}/", reschedule, format="json")
    assert response.status_code == 409 and response.json()["code"] == "overlap"


def test_shared_test_push_is_staff_only(cal, room_calendar, staff, api, workspace):
    assert client_for(staff).post(f"/api/calendar-sync/shared/workspace/{workspace.pk}/test").json() == {"ok": True}
    assert api.post(f"/api/calendar-sync/shared/workspace/{workspace.pk}/test").status_code == 403


def test_a_dead_room_connection_emails_whoever_connected_it(cal, room_calendar, staff, workspace, settings):
    staff.email = "ops@example.com"
    staff.save()
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "HEALTH_IDLE_SECONDS": 0}
    cal.revoke(room_calendar)
    mail.outbox.clear()
    call_command("calendar_sync_health", "--all")
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]
    assert workspace.name in mail.outbox[0].body
