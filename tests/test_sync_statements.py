"""The SQL of one sync, in the order production runs it: outside any test transaction, so the
outcome's BEGIN and COMMIT are real and the lock is released only after the COMMIT."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bookings.models import Booking
from calendar_sync import sync
from calendar_sync.models import SyncRecord
from calendar_sync.sources import get_source
from tests.helpers import GOOGLE_ACCOUNT

pytestmark = pytest.mark.django_db(transaction=True)


def label(sql):
    """'lock', 'unlock', 'BEGIN', 'COMMIT', or the statement's verb and table (without the app prefix)."""
    if re.search(r"pg_advisory_lock|GET_LOCK", sql):
        return "lock"
    if re.search(r"pg_advisory_unlock|RELEASE_LOCK", sql):
        return "unlock"
    if sql.startswith(("BEGIN", "COMMIT")):
        return sql.split()[0]
    table = re.search(r"(?:FROM|UPDATE|INTO)\s+[\"`]?(\w+)", sql).group(1)
    return f"{sql.split()[0]} {re.sub(r'^(calendar_sync|bookings)_', '', table)}"


def change(booking, **values):
    """Change the booking and record it as its save would (the task it would enqueue is run below)."""
    Booking.objects.filter(pk=booking.pk).update(**values)
    booking.refresh_from_db()
    sync.mark_changed(get_source("booking"), booking)


def test_a_sync_reads_then_commits_its_outcome_and_unlocks_last(google_connected, member, make_booking):
    """Lock; the record, its connection and the booking; the `remote_may_exist` mark (committed
    before the create is sent); then one transaction for the outcome (the booking's event id, the
    record's compare-and-set on its version, the access-log row); unlock after the COMMIT, so the
    next sync of this booking reads the outcome. After a change the event id is already right and
    an event may exist: two statements fewer. SQLite takes no lock (one writer at a time)."""
    lock = [] if connection.vendor == "sqlite" else ["lock"]
    unlock = [] if connection.vendor == "sqlite" else ["unlock"]
    reads = ["SELECT syncrecord", "SELECT calendartoken", "SELECT booking"]
    booking = make_booking(member)
    change(booking, status=Booking.Status.CONFIRMED)
    with CaptureQueriesContext(connection) as first:
        assert sync.sync_object("booking", booking.pk) == SyncRecord.State.SYNCED
    assert [label(q["sql"]) for q in first.captured_queries] == [
        *lock,
        *reads,
        "UPDATE syncrecord",
        "BEGIN",
        "UPDATE booking",
        "UPDATE syncrecord",
        "INSERT accesslog",
        "COMMIT",
        *unlock,
    ]
    change(booking, title="Moved")
    with CaptureQueriesContext(connection) as again:
        assert sync.sync_object("booking", booking.pk) == SyncRecord.State.SYNCED
    assert [label(q["sql"]) for q in again.captured_queries] == [
        *lock,
        *reads,
        "BEGIN",
        "UPDATE syncrecord",
        "INSERT accesslog",
        "COMMIT",
        *unlock,
    ]
    assert google_connected.events(GOOGLE_ACCOUNT)[get_source("booking").event_id(booking.pk)]["summary"].startswith(
        "Moved"
    )
    assert [c["method"] for c in google_connected.calls()] == ["POST", "PATCH"]
