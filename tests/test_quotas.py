"""The quota governor, measured from the fakes' own request logs: sliding windows per connection (in
Redis and in memory), batch parts counted one by one, the bulk share, Graph's cap on requests in
flight, a Retry-After honoured by every worker, and the fallback when the quota Redis is down."""

import base64
import datetime as dt
import hashlib
import logging
import os
import threading
import time
import uuid

import pytest
import redis

from bookings.models import Booking
from calendar_sync import quotas, sync
from calendar_sync.checks import check_settings
from calendar_sync.exceptions import TransientError
from calendar_sync.models import SyncRecord
from calendar_sync.owners import Owner
from calendar_sync.providers.google import GoogleProvider
from calendar_sync.sources import Event
from calendar_sync.types import Operation
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT, REDIRECT, grant

QUOTA_REDIS = os.environ.get("QUOTA_TEST_REDIS", "redis://127.0.0.1:6379/1")
STORAGES = ["memory://", QUOTA_REDIS]


def key(n):
    return base64.b32hexencode(hashlib.sha256(f"quota:{n}".encode()).digest()[:20]).decode().lower()


def upsert(n):
    start = dt.datetime(2030, 5, 1, 9, 0, tzinfo=dt.UTC) + dt.timedelta(hours=n)
    event = Event(summary=f"Booking {n}", start=start, end=start + dt.timedelta(minutes=30))
    return Operation(key=key(n), event=event, object_ref=f"booking:{n}")


@pytest.fixture
def storage(request, settings):
    """QUOTA_STORAGE for the test (a Redis one emptied of quota keys first)."""
    uri = request.param
    if uri.startswith("redis"):
        client = redis.Redis.from_url(uri, socket_connect_timeout=1)
        try:
            client.ping()
        except redis.RedisError:
            pytest.skip(f"no Redis at {uri}")
        stale = list(client.scan_iter("LIMITS*calendar_sync:quota*")) + list(client.scan_iter("calendar_sync:quota*"))
        if stale:
            client.delete(*stale)
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "QUOTA_STORAGE": uri}
    return uri


def configure(settings, **quota):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, **quota}


@pytest.fixture
def google(fake_google, settings):
    configure(settings, GOOGLE_REDIRECT_URI=REDIRECT)
    provider = GoogleProvider()
    return provider, grant(fake_google, provider).access_token


@pytest.fixture
def outlook(fake_microsoft, ms_provider, ms_tokens, ms_calendar):
    return ms_provider, ms_tokens.access_token, ms_calendar


def in_threads(n, work):
    errors = []

    def run(i):
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_no_window_holds_more_than_the_connection_limit(storage, google, fake_google, settings):
    provider, access = google
    configure(settings, QUOTAS={"google": {"connection": "10/2 seconds"}}, QUOTA_MAX_WAIT=10)
    connection = uuid.uuid4().hex

    def sync_one(i):
        with quotas.connection("google", connection):
            for n in range(6):
                (outcome,) = provider.apply(access, "primary", [upsert(i * 10 + n)])
                assert outcome.error is None

    started = time.monotonic()
    assert in_threads(4, sync_one) == []  # 24 calls from four threads
    assert len(fake_google.calls(GOOGLE_ACCOUNT)) == 24
    assert fake_google.max_calls_in_window(GOOGLE_ACCOUNT, 2.0) <= 10
    assert time.monotonic() - started >= 2 * 3 - 0.5  # three windows (2 s + the 1 s margin each)


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_batch_parts_count_one_by_one(storage, google, fake_google, settings):
    provider, access = google
    configure(settings, QUOTAS={"google": {"connection": "8/2 seconds"}}, QUOTA_MAX_WAIT=10)
    with quotas.connection("google", uuid.uuid4().hex):
        outcomes = provider.apply(access, "primary", [upsert(n) for n in range(20)])
    assert all(o.error is None for o in outcomes) and len(fake_google.events(GOOGLE_ACCOUNT)) == 20
    batches = [r for r in fake_google.http_requests if r["path"].startswith("/batch/")]
    assert len(batches) == 3  # 8 + 8 + 4 parts: no batch outgrows the window
    assert fake_google.max_calls_in_window(GOOGLE_ACCOUNT, 2.0) <= 8


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_a_full_window_refuses_without_calling(storage, google, fake_google, settings):
    provider, access = google
    configure(settings, QUOTAS={"google": {"connection": "3/minute"}}, QUOTA_MAX_WAIT=0.5)
    with quotas.connection("google", uuid.uuid4().hex):
        for _ in range(3):
            provider.busy(
                access, "primary", dt.datetime(2030, 1, 1, tzinfo=dt.UTC), dt.datetime(2030, 1, 2, tzinfo=dt.UTC)
            )
        started = time.monotonic()
        (outcome,) = provider.apply(access, "primary", [upsert(1)])  # reads counted: this write has no room
    assert isinstance(outcome.error, TransientError) and outcome.error.code == "quota"
    assert 55 < outcome.error.retry_after <= 61 and time.monotonic() - started < 0.2  # no point waiting
    assert len(fake_google.calls(GOOGLE_ACCOUNT)) == 3


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_bulk_work_leaves_room_for_members(storage, google, fake_google, settings):
    provider, access = google
    configure(settings, QUOTAS={"google": {"connection": "10/minute"}}, QUOTA_MAX_WAIT=0, QUOTA_BULK_SHARE=0.5)
    connection = uuid.uuid4().hex
    with quotas.connection("google", connection), quotas.bulk():
        outcomes = [provider.apply(access, "primary", [upsert(n)])[0] for n in range(8)]
    assert [o.error is None for o in outcomes] == [True] * 5 + [False] * 3  # the backfill's half
    assert {o.error.code for o in outcomes if o.error} == {"quota"}
    with quotas.connection("google", connection):  # a member's booking still goes out at once
        member = [provider.apply(access, "primary", [upsert(100 + n)])[0] for n in range(6)]
    assert [o.error is None for o in member] == [True] * 5 + [False]
    assert len(fake_google.calls(GOOGLE_ACCOUNT)) == 10


@pytest.mark.parametrize("storage", STORAGES, indirect=True)
def test_never_more_than_four_graph_requests_in_flight(storage, outlook, fake_microsoft, settings):
    provider, access, calendar = outlook
    configure(settings, QUOTA_MAX_WAIT=30)
    fake_microsoft.latency = 0.15
    fake_microsoft.reset_log()
    connection = uuid.uuid4().hex

    def sync_one(i):
        with quotas.connection("microsoft", connection):
            for n in range(2):
                (outcome,) = provider.apply(access, calendar, [upsert(i * 10 + n)])
                assert outcome.error is None

    try:
        assert in_threads(12, sync_one) == []
    finally:
        fake_microsoft.latency = 0.0
    assert len(fake_microsoft.events()) == 24
    assert fake_microsoft.max_in_flight(MS_ACCOUNT) == 4  # reached, never passed


@pytest.mark.parametrize("storage", [QUOTA_REDIS], indirect=True)
def test_retry_after_holds_every_worker(storage, outlook, fake_microsoft, settings):
    """One worker meets a 429 with Retry-After: 2; another, sharing nothing but the quota Redis
    (this process's state forgotten in between), sends nothing to that mailbox before then."""
    provider, access, calendar = outlook
    configure(settings, QUOTA_MAX_WAIT=5)
    connection = uuid.uuid4().hex
    fake_microsoft.inject(429, retry_after=2)
    with quotas.connection("microsoft", connection):
        (first,) = provider.apply(access, calendar, [upsert(1)])
    assert first.error is not None and first.error.status == 429
    quotas.reset()  # a second worker: none of the first one's memory
    assert quotas.throttled_until("microsoft", connection) is not None
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(_apply_in(connection, provider, access, calendar, upsert(2))), daemon=True
        )
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0].error is None
    calls = fake_microsoft.calls(MS_ACCOUNT)
    throttled = next(c["time"] for c in calls if c["status"] == 429)
    assert min(c["time"] for c in calls if c["status"] != 429) - throttled >= 1.95


def _apply_in(connection, provider, access, calendar, operation):
    with quotas.connection("microsoft", connection):
        return provider.apply(access, calendar, [operation])[0]


def test_redis_down_falls_back_to_a_share_of_the_limit(google, fake_google, settings, caplog):
    provider, access = google
    configure(
        settings,
        QUOTA_STORAGE="redis://127.0.0.1:9/0",  # nothing listens there
        QUOTAS={"google": {"connection": "8/2 seconds"}},
        QUOTA_FALLBACK_SHARE=0.25,
        QUOTA_MAX_WAIT=10,
    )
    caplog.set_level(logging.WARNING, logger="calendar_sync.quotas")
    started = time.monotonic()
    with quotas.connection("google", uuid.uuid4().hex):
        outcomes = [provider.apply(access, "primary", [upsert(n)])[0] for n in range(4)]
    assert all(o.error is None for o in outcomes)  # the sync goes on...
    assert fake_google.max_calls_in_window(GOOGLE_ACCOUNT, 2.0) <= 2  # ...at a quarter of the limit, never unlimited
    assert time.monotonic() - started >= 3 - 0.2
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # said once per outage, not per request


def test_a_quota_it_cannot_read_is_a_system_check_error(settings):
    configure(settings, QUOTAS={"google": {"connection": "lots"}, "microsoft": {"concurrent": "4"}})
    found = [e for e in check_settings(None) if e.id == "calendar_sync.E008"]
    assert len(found) == 2 and "lots" in found[0].msg + found[1].msg
    configure(settings, QUOTAS={"google": {"connection": "100/minute"}}, QUOTA_STORAGE="redis://127.0.0.1:6379/3")
    assert not [e for e in check_settings(None) if e.id == "calendar_sync.E008"]


@pytest.mark.parametrize("storage", [QUOTA_REDIS], indirect=True)
def test_a_killed_workers_slots_come_back_when_their_lease_ends(storage, outlook, fake_microsoft, settings):
    provider, access, calendar = outlook
    configure(settings, HTTP_TIMEOUT=1, QUOTA_MAX_WAIT=10)  # a lease lasts 2 × 1 + 2 seconds
    connection = uuid.uuid4().hex
    held = [quotas.acquire(1) for _ in range(4)]  # four requests whose worker died mid-flight: never released
    with quotas.connection("microsoft", connection):
        for request in held:
            request.__enter__()
    quotas.reset()  # another worker
    started = time.monotonic()
    with quotas.connection("microsoft", connection):
        (outcome,) = provider.apply(access, calendar, [upsert(1)])
    assert outcome.error is None and 3.5 <= time.monotonic() - started < 6
    assert len(held) == 4  # still held (never exited) while the request above waited


@pytest.mark.django_db
def test_a_backfill_counts_as_bulk_work(google_connected, member, make_booking, settings):
    """The core marks its backfills bulk (their reason): half the window, the rest left for members."""
    configure(settings, QUOTAS={"google": {"connection": "10/minute"}}, QUOTA_MAX_WAIT=0, QUOTA_BULK_SHARE=0.5)
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "BULK_CHUNK": 1}
    for i in range(8):
        make_booking(member, hours_from_now=24 + 3 * i, status=Booking.Status.CONFIRMED)
    SyncRecord.objects.all().delete()  # as if the member had just connected
    google_connected.reset_log()
    sync.backfill(Owner.member(member))
    assert len(google_connected.calls(GOOGLE_ACCOUNT)) == 5  # the bulk share of 10
