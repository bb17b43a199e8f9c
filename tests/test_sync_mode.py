"""SYNC_MODE "inline": a host without Celery workers syncs in the process that saved, after its commit;
and the one beat schedule the app provides (the host's settings use it)."""

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone

from calendar_sync.beat import beat_schedule
from calendar_sync.checks import check_settings
from calendar_sync.models import SyncRecord
from calendar_sync.sources import get_source
from managehub.celery import app as celery_app
from tests.helpers import GOOGLE_ACCOUNT

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_worker(settings):
    """Celery as a host without workers has it: not eager, and nothing ever consumes what is published."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SYNC_MODE": "inline"}
    celery_app.conf.task_always_eager = False
    yield
    celery_app.conf.task_always_eager = True


def test_inline_mode_syncs_on_commit_without_a_broker(google_connected, no_worker, api, member, make_booking, run):
    booking = make_booking(member)
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [get_source("booking").event_id(booking.pk)]
    assert run(api.post, f"/api/bookings/{booking.pk}/cancel/").status_code == 200
    assert google_connected.events(GOOGLE_ACCOUNT) == {}


def test_inline_mode_leaves_a_transient_failure_to_the_sweep_command(
    google_connected, no_worker, api, member, make_booking, run
):
    google_connected.inject(503, times=1, retry_after=0)
    booking = make_booking(member)
    assert run(api.post, f"/api/bookings/{booking.pk}/confirm/").status_code == 200  # the request does not fail
    assert SyncRecord.objects.get(object_id=str(booking.pk)).state == SyncRecord.State.PENDING
    SyncRecord.objects.update(retry_at=timezone.now(), updated_at=timezone.now() - timezone.timedelta(minutes=5))
    call_command("calendar_sync_sweep")  # what cron runs where there is no beat
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [get_source("booking").event_id(booking.pk)]


def test_an_unknown_sync_mode_is_named(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SYNC_MODE": "threads"}
    assert any(e.id == "calendar_sync.E007" and "SYNC_MODE" in e.msg for e in check_settings(None))


def test_the_beat_schedule_has_every_periodic_task_and_the_host_uses_it():
    tasks = {entry["task"] for entry in beat_schedule().values()}
    assert tasks == {
        "calendar_sync.tasks.sweep",
        "calendar_sync.tasks.pull_all",
        "calendar_sync.tasks.renew_push",
        "calendar_sync.tasks.health",
    }
    assert celery_app.tasks.keys() >= tasks  # each names a registered task
    assert django_settings.CELERY_BEAT_SCHEDULE.keys() == beat_schedule().keys()
