"""Operator tools: resync commands, the admin resync action, the bounded sweeper, and a sync that fails
unexpectedly ending `failed` with a bounded retry schedule."""

import io
from datetime import UTC

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from bookings.models import Booking, Workspace
from calendar_sync import sync, tasks
from calendar_sync.models import OAuthState, SyncRecord
from tests.helpers import GOOGLE_ACCOUNT, connect, landing

pytestmark = pytest.mark.django_db


def test_resync_failed_only(google_connected, member, make_booking, run):
    ok = make_booking(member, hours_from_now=24, status=Booking.Status.CONFIRMED)
    bad = make_booking(member, hours_from_now=48, status=Booking.Status.CONFIRMED)
    tasks.sync_task.delay("booking", str(ok.pk))
    google_connected.inject(400, times=1, code="invalid")
    tasks.sync_task.delay("booking", str(bad.pk))
    assert SyncRecord.objects.get(object_id=str(bad.pk)).state == "failed"
    google_connected.reset_log()
    out = io.StringIO()
    run(call_command, "calendar_sync_resync", "--user", "alice", "--failed", stdout=out)  # enqueued on commit
    assert "Queued 1 failed" in out.getvalue()
    assert SyncRecord.objects.get(object_id=str(bad.pk)).state == "synced"
    from calendar_sync.sources import get_source

    ok_id = get_source("booking").event_id(ok.pk)
    assert google_connected.calls() and not any(ok_id in c["path"] for c in google_connected.calls())  # left alone
    assert len(google_connected.events(GOOGLE_ACCOUNT)) == 2


def test_full_resync_pushes_upcoming_again(google_connected, member, make_booking, run):
    booking = make_booking(member, status=Booking.Status.CONFIRMED)
    tasks.sync_task.delay("booking", str(booking.pk))
    with google_connected.lock:
        google_connected.accounts[GOOGLE_ACCOUNT]["events"].clear()  # the calendar lost everything
    run(call_command, "calendar_sync_resync", "--all", stdout=io.StringIO())
    assert len(google_connected.events(GOOGLE_ACCOUNT)) == 1


def test_resync_unknown_user(db):
    with pytest.raises(CommandError, match="No user"):
        call_command("calendar_sync_resync", "--user", "nobody")


def test_admin_resync_action_on_bookings(google_connected, member, staff, client, make_booking, run):
    booking = make_booking(member, status=Booking.Status.CONFIRMED)  # confirmed before any sync ran
    SyncRecord.objects.all().delete()
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    run(client.post, "/admin/bookings/booking/", {"action": "resync", "_selected_action": [str(booking.pk)]})
    assert SyncRecord.objects.get(object_id=str(booking.pk)).state == "synced"
    assert len(google_connected.events(GOOGLE_ACCOUNT)) == 1
    page = client.get("/admin/bookings/booking/").content.decode()
    assert "Synced" in page


def test_sweeper_is_bounded_and_cleans_old_states(google_connected, member, make_booking, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SWEEP_BATCH": 3, "SWEEP_STALE_AFTER": 0}
    for i in range(5):
        make_booking(member, hours_from_now=24 + 3 * i, status=Booking.Status.CONFIRMED)
    SyncRecord.objects.update(updated_at=timezone.now() - timezone.timedelta(minutes=1))
    OAuthState.objects.create(user=member, provider="google", code_verifier="v")
    OAuthState.objects.update(created_at=timezone.now() - timezone.timedelta(hours=1))
    assert tasks.sweep() == 3
    assert tasks.sweep() == 2
    assert tasks.sweep() == 0
    assert not OAuthState.objects.exists()
    assert len(google_connected.events(GOOGLE_ACCOUNT)) == 5


def test_bad_source_setting_is_a_named_check_error(settings):
    from calendar_sync.checks import check_settings

    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SOURCES": {"x": "nowhere.Source"}}
    errors = [e for e in check_settings(None) if e.id == "calendar_sync.E004"]
    assert errors and "nowhere.Source" in errors[0].msg


def test_unexpected_sync_error_ends_failed_with_a_bounded_retry(fake_google, api, member, settings):
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    lisbon = Workspace.objects.create(name="Old", time_zone="Europe/Lisbon")
    start = timezone.datetime(1, 1, 1, tzinfo=UTC)
    booking = Booking.objects.create(
        user=member,
        workspace=lisbon,
        title="Ancient",
        start=start,
        end=start + timezone.timedelta(hours=1),
        status="confirmed",
    )
    assert sync.sync_object("booking", booking.pk) == "failed"
    record = SyncRecord.objects.get(object_id=str(booking.pk), destination="member")
    assert record.state == "failed" and "OverflowError" in record.last_error
    assert record.retry_at is not None and record.attempts == 1
    assert api.get("/api/calendar-sync/status").json()["failed_syncs"] == 1
    assert api.get(f"/api/bookings/{booking.pk}/").json()["calendar_sync"]["state"] == "failed"
    # the schedule is bounded: after MAX_RETRIES attempts nothing is scheduled any more
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "MAX_RETRIES": 2}
    sync.sync_object("booking", booking.pk)
    assert SyncRecord.objects.get(pk=record.pk).retry_at is None
