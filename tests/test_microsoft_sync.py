"""Bookings in Outlook exactly once: a lifecycle in three Graph calls, backfills in batches of twenty,
lost responses and throttling survived, Graph's errors mapped to the sync's outcomes, each member's
own mailbox, and the activity a member sees."""

import base64
import datetime as dt
import hashlib
import time
from collections import Counter

import pytest
from django.utils import timezone

from bookings.models import Booking
from calendar_sync import quotas, sync, tasks
from calendar_sync.exceptions import AuthorizationLost, PermanentError, TransientError
from calendar_sync.models import AccessLog, CalendarToken, SyncRecord
from calendar_sync.providers.base import Operation
from calendar_sync.providers.microsoft import PROP_ID
from calendar_sync.sources import Event
from calendar_sync.testing.fake_microsoft import DEFAULT_ACCOUNT
from tests.helpers import MS_ACCOUNT, client_for, connect, forget_quotas, landing

pytestmark = pytest.mark.django_db


def methods(fake):
    return [c["method"] for c in fake.calls()]


def key(n):
    return base64.b32hexencode(hashlib.sha256(f"booking:{n}".encode()).digest()[:20]).decode().lower()


def event(n=1, summary=None, zone="UTC"):
    start = dt.datetime(2030, 5, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(days=n)
    return Event(
        summary=summary or f"Booking {n}",
        start=start,
        end=start + dt.timedelta(hours=2),
        time_zone=zone,
        location="The Loft",
        description=f"Desk {n}",
    )


def upsert(n=1, **kw):
    summary = kw.pop("summary", None)
    zone = kw.pop("zone", "UTC")
    return Operation(key=key(n), event=event(n, summary, zone), object_ref=f"booking:{n}", **kw)


def delete(n=1, **kw):
    return Operation(key=key(n), event=None, object_ref=f"booking:{n}", **kw)


# --- through the API (eager tasks) ----------------------------------------------------------------
def test_lifecycle_costs_three_graph_calls_and_reruns_none(outlook, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    events = outlook.events(MS_ACCOUNT)
    assert len(events) == 1
    ((remote_id, event),) = events.items()
    assert Booking.objects.get(pk=booking.pk).google_calendar_event_id == remote_id
    assert (
        event["subject"] == "Deep work — The Loft"
        and event["location"]["displayName"] == "The Loft, 1 Harbour St, Lisbon"
    )
    assert event["body"]["contentType"] == "text" and f"/bookings/{booking.pk}" in event["body"]["content"]
    assert event["start"]["timeZone"] == "GMT Standard Time"
    later = booking.start + timezone.timedelta(days=1)
    run(
        api.patch,
        f"/api/bookings/{booking.pk}/",
        {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=2)).isoformat()},
        format="json",
    )
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
    token = CalendarToken.objects.get()
    assert (quotas.throttled_until("microsoft", token.pk) - timezone.now()).total_seconds() > 5
    calls = len(outlook.calls())
    with pytest.raises(TransientError) as held:  # the connection is throttled for every worker: nothing is sent
        sync.sync_object("booking", booking.pk)
    assert held.value.code == "quota" and held.value.retry_after > 5 and len(outlook.calls()) == calls
    forget_quotas()  # as if the seven seconds had passed (for every worker: the quota Redis too)
    sync.sync_object("booking", booking.pk)
    assert len(outlook.events(MS_ACCOUNT)) == 1


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


def test_activity_shows_the_lifecycle(outlook, api, member, make_booking, run):
    booking = make_booking(member)
    run(api.post, f"/api/bookings/{booking.pk}/confirm/")
    later = booking.start + timezone.timedelta(hours=3)
    run(
        api.patch,
        f"/api/bookings/{booking.pk}/",
        {"start": later.isoformat(), "end": (later + timezone.timedelta(hours=1)).isoformat()},
        format="json",
    )
    run(api.post, f"/api/bookings/{booking.pk}/cancel/")
    rows = api.get("/api/calendar-sync/activity").json()["results"]
    writes = [(r["operation"], r["reason"], r["outcome"]) for r in rows if r["object_ref"] == f"booking:{booking.pk}"]
    assert writes == [
        ("delete_event", "cancelled", "ok"),
        ("update_event", "rescheduled", "ok"),
        ("create_event", "confirmed", "ok"),
    ]
    assert all(r["provider"] == "microsoft" for r in rows)
    assert client_for(None).get("/api/calendar-sync/activity").status_code in (401, 403)


# --- MicrosoftProvider.apply: single operations ---------------------------------------------------
def test_create_patch_delete_one_request_each(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.reset_log()
    [created] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1, zone="Europe/Paris")])
    assert created.error is None and created.remote_id
    stored = fake_microsoft.events()[created.remote_id]
    assert stored["subject"] == "Booking 1" and stored["transactionId"] == key(1)
    assert stored["start"] == {"dateTime": "2030-05-02T11:00:00", "timeZone": "Romance Standard Time"}
    assert stored["location"] == {"displayName": "The Loft"} and stored["body"] == {
        "contentType": "text",
        "content": "Desk 1",
    }
    assert stored["showAs"] == "busy" and stored["isReminderOn"] is False
    assert stored["singleValueExtendedProperties"] == [{"id": PROP_ID, "value": key(1)}]

    [patched] = ms_provider.apply(
        ms_tokens.access_token, ms_calendar, [upsert(1, summary="Moved", remote_id=created.remote_id)]
    )
    assert patched.error is None and patched.remote_id == created.remote_id
    assert fake_microsoft.events()[created.remote_id]["subject"] == "Moved"

    [deleted] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [delete(1, remote_id=created.remote_id)])
    assert deleted.error is None and deleted.remote_id is None
    assert fake_microsoft.events() == {}
    assert fake_microsoft.api_requests() == 3
    assert [c["method"] for c in fake_microsoft.calls()] == ["POST", "PATCH", "DELETE"]


def test_delete_of_missing_event_succeeds(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    [created] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    ms_provider.apply(ms_tokens.access_token, ms_calendar, [delete(1, remote_id=created.remote_id)])
    fake_microsoft.reset_log()
    [again] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [delete(1, remote_id=created.remote_id)])
    assert again.error is None
    [nothing] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [delete(2)])
    assert nothing.error is None and fake_microsoft.api_requests() == 1  # the second needed no call


def test_delete_by_key_when_the_id_is_unknown(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    results = ms_provider.apply(ms_tokens.access_token, ms_calendar, [delete(1, known_to_exist=True)])
    assert results[0].error is None and fake_microsoft.events() == {}
    [missing] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [delete(1, known_to_exist=True)])
    assert missing.error is None


def test_lost_create_response_then_retry_makes_one_event(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.lose_response()
    [lost] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    assert isinstance(lost.error, TransientError) and lost.error.code == "network"
    assert len(fake_microsoft.events()) == 1  # committed all the same
    [retried] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1, known_to_exist=True)])
    assert retried.error is None
    assert list(fake_microsoft.events()) == [retried.remote_id]


def test_retried_create_is_deduplicated_by_transaction_id(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.lose_response()
    ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    [retried] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])  # caller forgot it may exist
    assert retried.error is None and list(fake_microsoft.events()) == [retried.remote_id]


def test_lost_batch_response_then_retry_makes_one_event_each(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.lose_response()
    lost = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n) for n in range(5)])
    assert all(isinstance(o.error, TransientError) for o in lost)
    retried = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n, known_to_exist=True) for n in range(5)])
    assert all(o.error is None for o in retried)
    assert sorted(fake_microsoft.events()) == sorted(o.remote_id for o in retried)


def test_patch_of_remotely_deleted_event_recreates_it(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    [created] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    fake_microsoft.delete_event(fake_microsoft.default_account, created.remote_id)  # the member deleted it in Outlook
    [again] = ms_provider.apply(
        ms_tokens.access_token, ms_calendar, [upsert(1, summary="Back", remote_id=created.remote_id)]
    )
    assert again.error is None and again.remote_id != created.remote_id
    assert [e["subject"] for e in fake_microsoft.events().values()] == ["Back"]


def test_patch_known_event_without_id_finds_it_by_key(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    [created] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    fake_microsoft.reset_log()
    [found] = ms_provider.apply(
        ms_tokens.access_token, ms_calendar, [upsert(1, summary="Renamed", known_to_exist=True)]
    )
    assert found.remote_id == created.remote_id and fake_microsoft.events()[created.remote_id]["subject"] == "Renamed"
    assert [c["method"] for c in fake_microsoft.calls()] == ["GET", "PATCH"]


def test_time_zones_go_out_with_their_windows_names(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    """Graph always accepts Windows zone names; an IANA zone with no Windows name goes out in UTC."""
    [lisbon] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1, zone="Europe/Lisbon")])
    assert fake_microsoft.events()[lisbon.remote_id]["start"] == {
        "dateTime": "2030-05-02T10:00:00",
        "timeZone": "GMT Standard Time",
    }
    [unknown] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(2, zone="Etc/Unknown")])
    assert fake_microsoft.events()[unknown.remote_id]["start"]["timeZone"] == "UTC"


# --- MicrosoftProvider.apply: errors --------------------------------------------------------------
def test_expired_token_is_authorization_lost(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.expire_access_tokens()
    [result] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    assert isinstance(result.error, AuthorizationLost) and result.error.status == 401
    assert ms_tokens.access_token not in str(result.error)
    with pytest.raises(AuthorizationLost):
        ms_provider.list_calendars(ms_tokens.access_token)


def test_bad_request_is_permanent_with_graph_code(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.inject(400, code="ErrorInvalidRequest")
    [result] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    assert isinstance(result.error, PermanentError) and result.error.code == "ErrorInvalidRequest"
    assert result.error.status == 400 and "ErrorInvalidRequest" in str(result.error)


def test_read_only_calendar_is_permanent(ms_provider, fake_microsoft, ms_tokens):
    [result] = ms_provider.apply(
        ms_tokens.access_token, fake_microsoft.calendar_id(DEFAULT_ACCOUNT, "Holidays"), [upsert(1)]
    )
    assert isinstance(result.error, PermanentError) and result.error.code == "ErrorAccessDenied"


def test_unavailable_is_transient_with_retry_after(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.inject(503, retry_after=7)
    [result] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    assert isinstance(result.error, TransientError) and result.error.status == 503 and result.error.retry_after == 7
    assert fake_microsoft.events() == {}


def test_failed_batch_fails_every_operation(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.inject(504, path="/v1.0/$batch")
    results = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n) for n in range(3)])
    assert all(isinstance(o.error, TransientError) and o.error.status == 504 for o in results)


# --- MicrosoftProvider.apply: batching ------------------------------------------------------------
def test_many_creates_go_in_batches_of_twenty(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.reset_log()
    results = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n) for n in range(120)])
    assert all(o.error is None for o in results)
    assert len({o.remote_id for o in results}) == 120 and len(fake_microsoft.events()) == 120
    assert fake_microsoft.api_requests() <= 7 and fake_microsoft.max_batch_size <= 20
    for n, outcome in enumerate(results):  # outcomes line up with operations despite shuffled answers
        assert fake_microsoft.events()[outcome.remote_id]["transactionId"] == key(n)


def test_mixed_batch(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    first = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n) for n in range(3)])
    ops = [
        upsert(0, summary="Changed", remote_id=first[0].remote_id),
        delete(1, remote_id=first[1].remote_id),
        upsert(2, known_to_exist=True),
        upsert(3),
        delete(4),
    ]
    results = ms_provider.apply(ms_tokens.access_token, ms_calendar, ops)
    assert all(o.error is None for o in results)
    assert (
        results[0].remote_id == first[0].remote_id
        and results[1].remote_id is None
        and results[2].remote_id == first[2].remote_id
    )
    assert sorted(fake_microsoft.events()) == sorted([first[0].remote_id, first[2].remote_id, results[3].remote_id])


def test_throttled_parts_wait_for_retry_after_and_only_they_are_resent(
    ms_provider, fake_microsoft, ms_tokens, ms_calendar
):
    fake_microsoft.reset_log()
    fake_microsoft.inject(429, times=2, retry_after=1, batch_part=True)
    results = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n) for n in range(5)])
    assert all(o.error is None for o in results) and len(fake_microsoft.events()) == 5
    posts = [c for c in fake_microsoft.calls() if c["method"] == "POST"]
    throttled = {c["transactionId"]: c["time"] for c in posts if c["status"] == 429}
    sent = Counter(c["transactionId"] for c in posts)
    assert len(throttled) == 2
    for n in range(5):
        assert sent[key(n)] == (2 if key(n) in throttled else 1)
    for c in posts:
        if c["status"] == 201 and c["transactionId"] in throttled:
            assert c["time"] - throttled[c["transactionId"]] >= 1.0
    assert fake_microsoft.api_requests() == 2


def test_throttling_that_persists_is_reported(ms_provider, fake_microsoft, ms_tokens, ms_calendar, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    fake_microsoft.inject(429, times=100, retry_after=1, batch_part=True)
    results = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n) for n in range(2)])
    assert all(isinstance(o.error, TransientError) and o.error.retry_after == 1 for o in results)
    assert fake_microsoft.api_requests() == 4  # first try and three retries


def test_patch_404_inside_a_batch_recreates(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    first = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(n) for n in range(2)])
    fake_microsoft.delete_event(fake_microsoft.default_account, first[0].remote_id)
    results = ms_provider.apply(
        ms_tokens.access_token, ms_calendar, [upsert(n, remote_id=first[n].remote_id) for n in range(2)]
    )
    assert all(o.error is None for o in results)
    assert results[0].remote_id != first[0].remote_id and results[1].remote_id == first[1].remote_id
    assert len(fake_microsoft.events()) == 2


def test_duplicate_create_conflict_patches_the_existing_event(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    [created] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    fake_microsoft.inject(409, code="ErrorDuplicateTransactionId")
    [again] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1, summary="Second")])
    assert again.error is None and again.remote_id == created.remote_id
    assert [e["subject"] for e in fake_microsoft.events().values()] == ["Second"]


def test_create_answered_with_a_deleted_event_is_made_anew(ms_provider):
    from calendar_sync.providers.microsoft import _Step

    step = _Step("patch", "OLD", key(1))
    op = upsert(1, remote_id="OLD")
    assert ms_provider._advance(op, step, 404, {}, {"error": {"code": "ErrorItemNotFound"}}, batched=False) is None
    assert step.kind == "create" and step.gone_id == "OLD"
    assert ms_provider._advance(op, step, 201, {}, {"id": "OLD"}, batched=False) is None  # de-duplicated onto a ghost
    assert step.transaction_id != key(1)
    assert ms_provider._advance(op, step, 201, {}, {"id": "NEW"}, batched=False).remote_id == "NEW"


def test_single_throttled_request_is_handed_back(ms_provider, fake_microsoft, ms_tokens, ms_calendar):
    fake_microsoft.inject(429, retry_after=2)
    [result] = ms_provider.apply(ms_tokens.access_token, ms_calendar, [upsert(1)])
    assert isinstance(result.error, TransientError) and result.error.retry_after == 2 and result.error.status == 429
    assert fake_microsoft.api_requests() == 1
