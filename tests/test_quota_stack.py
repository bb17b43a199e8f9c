"""The quota governor on the real stack: four worker processes sync a burst of bookings over three
connected calendars (a Google member, an Outlook member, a Google room) under small limits. Judged
from the fakes' own request logs: no window above the per-connection limit, never more than four
Graph requests in flight per mailbox, nothing sent to a mailbox before its Retry-After, and each
connection kept busy at ≥ 0.9× its limit while work is queued."""

import json
import threading

import pytest
from django.db.models import F

from bookings import services
from bookings.models import Workspace
from calendar_sync.models import CalendarToken, SyncRecord
from managehub.celery import app as celery_app
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT, client_for, connect, landing, room_on
from tests.stack import Worker, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
LIMIT, WINDOW = 30, 30  # per connection: 30 requests in any 30 s
PER_CONNECTION = 2 * LIMIT  # two windows' worth queued at once on every connection
RETRY_AFTER = 2


def all_synced(records):
    """Every booking synced at its latest version in every destination (the room's bookings twice)."""
    synced = SyncRecord.objects.filter(state="synced", synced_version=F("version")).count()
    return synced == records == SyncRecord.objects.count()


def utilisation(times):
    """How busy the connection was kept while work waited for room: a request that had to wait for
    the window goes out W seconds after the one LIMIT requests before it, at best (plus the governor's
    one-second margin); 1.0 means every freed place was taken at once."""
    times = sorted(times)
    gaps = [later - earlier for earlier, later in zip(times, times[LIMIT:], strict=False)]
    return WINDOW / (sum(gaps) / len(gaps))


def test_four_workers_stay_within_every_limit(stack, fake_google, fake_microsoft, member, other, staff, make_booking):
    room = room_on(fake_google, staff, Workspace.objects.create(name="Room", time_zone="UTC"))
    desk = Workspace.objects.create(name="Desk", time_zone="UTC")  # no room calendar: Graph calls only
    assert landing(connect(client_for(member), fake_google))["calendar_sync"] == "connected"
    assert landing(connect(client_for(other), fake_microsoft))["calendar_sync"] == "connected"
    assert CalendarToken.objects.count() == 3
    quota = {"connection": f"{LIMIT}/{WINDOW} seconds"}
    stack.env["CALENDAR_SYNC_QUOTAS"] = json.dumps({"google": quota, "microsoft": {**quota, "concurrent": 4}})
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    fake_google.latency, fake_microsoft.latency = 0.05, 0.2  # Graph slow enough to be asked in parallel
    fake_google.reset_log()
    fake_microsoft.reset_log()
    fake_microsoft.inject(429, times=1, retry_after=RETRY_AFTER, path="/v1.0/me/calendar/events")
    bookings = [
        make_booking(user, hours_from_now=24 + i, duration=1, ws=ws)
        for i in range(PER_CONNECTION)
        for user, ws in ((member, room.workspace), (other, desk))
    ]
    for b in bookings:  # the whole burst queued before any worker takes from it
        services.confirm_booking(b)
    workers = [stack] + [Worker(stack.env) for _ in range(3)]
    try:
        starting = [threading.Thread(target=w.start) for w in workers]
        for t in starting:
            t.start()
        for t in starting:
            t.join()
        wait_until(lambda: all_synced(len(bookings) + PER_CONNECTION), timeout=240, what="the burst to settle")
    finally:
        fake_google.latency = fake_microsoft.latency = 0.0
        for w in workers[1:]:
            w.stop()
    accounts = {
        "Google member": (fake_google, GOOGLE_ACCOUNT),
        "Google room": (fake_google, fake_google.room_account),
        "Outlook member": (fake_microsoft, MS_ACCOUNT),
    }
    report = {}
    for name, (fake, account) in accounts.items():
        calls = fake.calls(account)
        times = [c["time"] for c in calls if c.get("status") != 429]
        report[name] = {
            "calls": len(calls),
            "busiest window": fake.max_calls_in_window(account, WINDOW),
            "utilisation": round(utilisation(times), 3),
        }
    report["Outlook member"]["most in flight"] = fake_microsoft.max_in_flight(MS_ACCOUNT)
    print(f"\n[quota stack] limit {LIMIT}/{WINDOW} s per connection: {report}")
    for name, figures in report.items():
        assert figures["calls"] <= PER_CONNECTION + 2, (name, figures)  # held-back syncs cost no extra call
        assert figures["busiest window"] <= LIMIT, (name, figures)
        assert figures["utilisation"] >= 0.9, (name, figures)
    assert report["Outlook member"]["most in flight"] <= 4
    graph = fake_microsoft.calls(MS_ACCOUNT)
    (throttled,) = [c["time"] for c in graph if c["status"] == 429]
    arrived = [r["time"] for r in fake_microsoft.http_requests if r.get("account") == MS_ACCOUNT]
    # Requests already on their way when the 429 was answered may arrive just after it; none sent later
    # arrives before the Retry-After has passed.
    assert not [t for t in arrived if throttled + 0.1 < t < throttled + RETRY_AFTER - 0.05]
