"""Syncs of one booking in one calendar run one at a time across workers (`calendar_sync.locks`):
an advisory lock on PostgreSQL, GET_LOCK on MySQL/MariaDB. SQLite, one writer at a time, has none."""

import threading

import pytest
from django.db import connection

from bookings.models import Booking
from calendar_sync import locks, sync
from calendar_sync.models import SyncRecord
from calendar_sync.sources import get_source
from tests.helpers import GOOGLE_ACCOUNT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite has no session locks; it runs one worker"),
]


def in_threads(n, work):
    """Run work() in n threads released together, each on its own database connection; their results."""
    barrier, results, errors = threading.Barrier(n), [], []

    def run():
        try:
            barrier.wait()
            results.append(work())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_racing_deliveries_call_google_once(google_connected, member, make_booking):
    """Four workers get the same sync at the same moment while Google is slow: the first creates the
    event, the others wait for its outcome and find nothing left to do."""
    booking = make_booking(member)
    Booking.objects.filter(pk=booking.pk).update(status=Booking.Status.CONFIRMED)
    booking.refresh_from_db()
    sync.mark_changed(get_source("booking"), booking)  # what the confirmation records; its task is raced below
    google_connected.latency = 0.3
    states = in_threads(4, lambda: sync.sync_object("booking", booking.pk))
    assert states == [SyncRecord.State.SYNCED] * 4
    assert [c["method"] for c in google_connected.calls()] == ["POST"]
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [get_source("booking").event_id(booking.pk)]


def test_a_held_lock_excludes_others_until_released_or_its_connection_ends():
    key = locks.key("booking", "42", "member")
    held, release, closed = threading.Event(), threading.Event(), threading.Event()

    def holder(close_instead):
        try:
            with locks.held("booking", "42", "member"):
                held.set()
                release.wait(10)
                if close_instead:  # as when a worker is killed: the database drops the lock with the session
                    connection.close()
                    closed.set()
            closed.set()
        finally:
            connection.close()

    for close_instead in (False, True):
        held.clear(), release.clear(), closed.clear()
        thread = threading.Thread(target=holder, args=(close_instead,))
        thread.start()
        assert held.wait(10)
        assert locks.try_acquire([key]) == [False]
        release.set()
        assert closed.wait(10)
        thread.join(10)
        assert locks.try_acquire([key]) == [True]
        locks.release([key])
