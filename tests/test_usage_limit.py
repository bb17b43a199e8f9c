"""Google's "Calendar usage limits exceeded" (403 quotaExceeded/usageLimits) pauses writes to that
connection: no call to it until the pause ends, one email, status and the admin say until when, and
afterwards the sweeper writes everything that waited."""

import time

import pytest
from django.db.models import F
from django.test import Client
from django.utils import formats, timezone

from calendar_sync import sync, tasks
from calendar_sync.models import CalendarToken, SyncRecord
from calendar_sync.owners import Owner
from tests.helpers import GOOGLE_ACCOUNT, ROOM_ACCOUNT, client_for, connect, connect_room, event_key, landing, settled
from tests.stack import event_id, matches, wait_until

pytestmark = pytest.mark.django_db
PAUSE = 3 * 3600  # the default USAGE_LIMIT_PAUSE


@pytest.fixture(autouse=True)
def _sweep_at_once(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SWEEP_STALE_AFTER": 0}


def creates(fake, account=GOOGLE_ACCOUNT):
    return [c for c in fake.calls(account) if c["method"] == "POST" and c["path"].endswith("/events")]


def time_passes(seconds):
    """Move every stored moment of the pause `seconds` into the past, as if that much time went by."""
    shift = timezone.timedelta(seconds=seconds)
    CalendarToken.objects.filter(paused_until__isnull=False).update(paused_until=F("paused_until") - shift)
    SyncRecord.objects.filter(retry_at__isnull=False).update(retry_at=F("retry_at") - shift)
    SyncRecord.objects.update(updated_at=F("updated_at") - shift)


def confirm(api, run, booking):
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200


def test_usage_limit_pauses_writes_mails_once_and_loses_nothing(
    google_connected, api, member, make_booking, run, mailoutbox
):
    fake = google_connected
    fake.usage_limit(GOOGLE_ACCOUNT)
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(4)]
    before = timezone.now()
    confirm(api, run, bookings[0])
    assert len(creates(fake)) == 1  # met the limit once

    status = api.get("/api/calendar-sync/status").json()
    paused_until = timezone.datetime.fromisoformat(status["paused_until"])
    assert (
        before + timezone.timedelta(seconds=PAUSE) <= paused_until <= timezone.now() + timezone.timedelta(seconds=PAUSE)
    )
    assert status["status"] == "active" and "usage limit" in status["last_error"]
    assert status["pending_syncs"] == 1 and status["failed_syncs"] == 0
    record = SyncRecord.objects.get(object_id=str(bookings[0].pk))
    assert record.state == "pending" and record.retry_at == CalendarToken.objects.get().paused_until

    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == ["alice@example.com"]
    resume = paused_until.strftime("%Y-%m-%d %H:%M UTC")
    assert resume in message.subject and resume in message.body and "nothing is lost" in message.body

    # while paused: more bookings, a backfill and a sweep call nothing, and tell nobody again
    calls = len(fake.calls())
    for booking in bookings[1:]:
        confirm(api, run, booking)
    counts, later = sync.backfill(Owner.member(member))
    assert counts == {"pending": 4} and later == []
    assert tasks.sweep() == 0  # nothing due before the pause ends
    assert len(fake.calls()) == calls
    assert len(mailoutbox) == 1
    records = SyncRecord.objects.filter(object_id__in=[str(b.pk) for b in bookings])
    assert {(r.state, r.retry_at) for r in records} == {("pending", paused_until)}
    assert api.get("/api/calendar-sync/status").json()["pending_syncs"] == 4

    # the pause ends (and so does the limit): the sweeper writes every booking, nothing lost
    fake.clear_faults()
    time_passes(PAUSE + 1)
    assert run(tasks.sweep) == 4
    assert settled(bookings)
    assert set(fake.events(GOOGLE_ACCOUNT)) == {event_key(b) for b in bookings}
    assert len(creates(fake)) == 1 + 4
    status = api.get("/api/calendar-sync/status").json()
    assert status["paused_until"] is None and status["last_error"] == "" and status["pending_syncs"] == 0
    assert CalendarToken.objects.get().paused_until is None

    # a later limit, after that pause ended, pauses again and mails again
    fake.usage_limit(GOOGLE_ACCOUNT)
    confirm(api, run, make_booking(member, hours_from_now=60))
    assert len(mailoutbox) == 2
    assert api.get("/api/calendar-sync/status").json()["paused_until"] is not None


def test_rate_limits_are_not_a_pause(google_connected, api, member, make_booking, run, mailoutbox):
    """403 rateLimitExceeded / userRateLimitExceeded, 429, and quotaExceeded outside usageLimits stay plain
    throttling: retried soon, no pause, no email."""
    fake = google_connected
    for i, (status, code) in enumerate(
        ((403, "rateLimitExceeded"), (403, "userRateLimitExceeded"), (429, None), (403, "quotaExceeded"))
    ):
        fake.inject(status, code=code, method="POST")
        booking = make_booking(member, hours_from_now=24 + 3 * i)
        confirm(api, run, booking)
        record = SyncRecord.objects.get(object_id=str(booking.pk))
        assert record.state == "pending" and record.attempts == 1  # retried in seconds
        assert record.retry_at < timezone.now() + timezone.timedelta(seconds=10)
    assert CalendarToken.objects.get().paused_until is None
    assert api.get("/api/calendar-sync/status").json()["paused_until"] is None
    assert mailoutbox == []


def test_backfill_meeting_the_limit_pauses_once(fake_google, api, member, make_booking, run, mailoutbox, settings):
    """Connecting with bookings to write: the first batch meets the limit and the rest is not sent;
    one pause, one email, all waiting."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "BATCH_SIZE": 10}
    bookings = [make_booking(member, hours_from_now=24 + 3 * i, status="confirmed") for i in range(25)]
    fake_google.usage_limit(GOOGLE_ACCOUNT)
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    assert len(creates(fake_google)) == 10  # one batch, every part refused; the other two never sent
    token = CalendarToken.objects.get()
    assert token.writes_paused and len(mailoutbox) == 1
    records = SyncRecord.objects.filter(object_id__in=[str(b.pk) for b in bookings])
    assert {(r.state, r.retry_at) for r in records} == {("pending", token.paused_until)}
    fake_google.clear_faults()
    time_passes(PAUSE + 1)
    run(tasks.sweep)
    assert settled(bookings) and set(fake_google.events(GOOGLE_ACCOUNT)) == {event_key(b) for b in bookings}


def test_room_pause_shows_in_shared_status_and_admin(
    fake_google, make_user, workspace, member, make_booking, run, mailoutbox
):
    """A room calendar's pause: the shared status, the staff who connected it by email, and the admin
    (column, filter, detail) say until when. The member's own calendar is not paused."""
    staff = make_user("staff", is_staff=True, is_superuser=True)
    staff_api = client_for(staff)
    fake_google.add_account(ROOM_ACCOUNT)
    assert "calendar_sync=connected" in run(connect_room, staff_api, fake_google, workspace, ROOM_ACCOUNT)["Location"]
    api = client_for(member)
    assert landing(run(connect, api, fake_google))["calendar_sync"] == "connected"
    fake_google.usage_limit(ROOM_ACCOUNT)
    booking = make_booking(member)
    confirm(api, run, booking)
    assert event_key(booking) in fake_google.events(GOOGLE_ACCOUNT)  # the member's calendar got it

    shared = staff_api.get(f"/api/calendar-sync/shared/workspace/{workspace.pk}/status").json()
    assert shared["paused_until"] and "usage limit" in shared["last_error"]
    assert api.get("/api/calendar-sync/status").json()["paused_until"] is None
    assert [m.to for m in mailoutbox] == [["staff@example.com"]] and workspace.name in mailoutbox[0].body

    room = CalendarToken.objects.get(owner_kind="workspace")
    browser = Client()
    browser.force_login(staff)
    url = "/admin/calendar_sync/calendartoken/"
    paused = browser.get(url + "?paused=yes")
    assert paused.status_code == 200 and list(paused.context["cl"].result_list) == [room]
    assert "writes paused until" in paused.content.decode()
    assert list(browser.get(url + "?paused=no").context["cl"].result_list) == [
        CalendarToken.objects.get(owner_kind="user")
    ]
    detail = browser.get(f"{url}{room.pk}/change/")
    assert detail.status_code == 200
    assert formats.localize(timezone.template_localtime(room.paused_until)) in detail.content.decode()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_pause_on_a_real_worker_no_redelivery_then_everything_written(
    member_on_worker, fake_google, member, make_booking
):
    """Through the broker: the pause stops calls from every worker process; no task waits in the
    broker for hours (redelivered past the visibility timeout, 5 s here); the sweep ends it."""
    fake_google.reset_log()
    fake_google.usage_limit(GOOGLE_ACCOUNT)
    bookings = [make_booking(member, hours_from_now=24 + 3 * i) for i in range(6)]
    for booking in bookings:
        assert member_on_worker.post(f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    ids = [str(b.pk) for b in bookings]

    def all_waiting():
        token = CalendarToken.objects.get()
        records = SyncRecord.objects.filter(object_id__in=ids)
        return token.writes_paused and {(r.state, r.retry_at) for r in records} == {("pending", token.paused_until)}

    wait_until(all_waiting, what="every booking waiting for the pause")
    sent = len(creates(fake_google))
    assert 1 <= sent <= 2  # at most one per worker process raced the pause
    time.sleep(6)  # past the broker's visibility timeout: nothing redelivered, nothing sent
    assert len(creates(fake_google)) == sent

    fake_google.clear_faults()
    time_passes(PAUSE + 1)
    assert tasks.sweep() == len(bookings)
    wait_until(lambda: settled(bookings) and matches(fake_google, bookings), what="every booking written")
    assert {event_id(b) for b in bookings} == set(fake_google.events(GOOGLE_ACCOUNT))
