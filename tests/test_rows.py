"""The sync's hand-compiled statements (`calendar_sync.rows`) give what the ORM gives, or step aside."""

import uuid

import pytest
from django.db import connection

from bookings.models import Booking
from calendar_sync import rows
from calendar_sync.models import SyncRecord
from calendar_sync.sources import get_source


@pytest.mark.django_db
def test_a_compiled_read_builds_what_the_orm_builds_with_its_related_objects(member, make_booking, django_assert_num_queries):
    booking = make_booking(member, title="Standup")
    queryset = get_source("booking").get_queryset()
    read = rows.by_pk(queryset, str(booking.pk))
    assert read is not None
    with django_assert_num_queries(1):
        (found,) = rows.run([read.params(str(booking.pk))])
        obj = read.load(found)
        assert (obj.workspace.name, obj.user.username) == (booking.workspace.name, member.username)  # no further query
    orm = queryset.get(pk=booking.pk)
    assert [getattr(obj, f.attname) for f in Booking._meta.concrete_fields] == [getattr(orm, f.attname) for f in Booking._meta.concrete_fields]
    assert obj._state.adding is False and obj._state.db == connection.alias
    (missing,) = rows.run([read.params(str(uuid.uuid4()))])
    assert read.load(missing) is None


@pytest.mark.django_db
def test_querysets_with_values_of_their_own_are_read_through_the_orm(member, make_booking):
    booking = make_booking(member)
    assert rows.by_pk(Booking.objects.filter(status="confirmed"), str(booking.pk)) is None
    assert rows.by_pk(Booking.objects.prefetch_related("user"), str(booking.pk)) is None
    assert rows.by_pk(Booking.objects.values("pk"), str(booking.pk)) is None
    assert rows.by_pk(Booking.objects.all(), str(booking.pk)) is not None


@pytest.mark.django_db(transaction=True)
def test_a_failed_transaction_leaves_nothing_and_the_connection_usable(member, make_booking):
    """Outside an atomic block the statements are one transaction (BEGIN/COMMIT in the same round
    trip on PostgreSQL): a failure rolls all of them back, and the next statement runs normally."""
    record = SyncRecord.objects.create(source="booking", object_id="1", owner_id=str(member.pk))
    assert not connection.in_atomic_block
    with pytest.raises(Exception):  # noqa: B017 - the database's own error class
        rows.run([rows.update(SyncRecord, {"last_error": "half"}, pk=record.pk), ("UPDATE no_such_table SET x = 1", [])], atomic=True)
    record.refresh_from_db()
    assert record.last_error == ""
    results = rows.run([rows.update(SyncRecord, {"last_error": "whole"}, pk=record.pk, version=record.version)], atomic=True,
                       after=[("SELECT %s", [7])])
    assert results == [1, [(7,)]]
    record.refresh_from_db()
    assert record.last_error == "whole"
    assert rows.run([rows.update(SyncRecord, {"last_error": "stale"}, pk=record.pk, version=record.version + 1)], atomic=True) == [0]
