"""Fault battery on the real stack: a mixed workload of confirmations, reschedules and
cancellations while one fault hits, judged by comparing the whole calendar with the bookings
(0 missing, 0 extra, 0 duplicated). Single guarantees measured exactly are in test_reliability.py.
"""

import subprocess
import sys
import time

import pytest
from django.utils import timezone

from bookings import services
from calendar_sync import tasks
from calendar_sync.models import CalendarToken
from tests.helpers import client_for, connect, landing, settled
from tests.stack import ROOT, BrokerProxy, Worker, calendar_report, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
CLEAN = {"missing": 0, "extra": 0, "duplicated": 0}


def make_bookings(member, make_booking, n=24):
    return [make_booking(member, hours_from_now=24 + 3 * i, duration=2, title=f"Desk {i}") for i in range(n)]


def workload(bookings, part=None):
    """Confirm all, move every third, cancel every fourth (some moved ones too)."""
    chosen = bookings if part is None else bookings[part]
    for b in chosen:
        services.confirm_booking(b)
    for b in chosen[::3]:
        later = b.start + timezone.timedelta(minutes=30)
        services.update_booking(b, start=later, end=later + timezone.timedelta(hours=1))
    for b in chosen[::4]:
        services.cancel_booking(b)


def converge(fake_google, bookings, name, timeout=90):
    wait_until(lambda: settled(bookings), timeout=timeout, what=f"{name}: every sync settled")
    report = calendar_report(fake_google, bookings)
    print(f"\n[fault battery] {name}: {report}")
    assert {k: report[k] for k in CLEAN} == CLEAN, report
    assert report["events"] == report["confirmed"] > 0
    return report


def test_bursts_of_5xx_and_429_with_latency(member_on_worker, fake_google, member, make_booking):
    bookings = make_bookings(member, make_booking)
    fake_google.latency = 0.02
    fake_google.inject(503, times=8, retry_after=0.5)
    fake_google.inject(429, times=8, retry_after=0.5)
    fake_google.inject(500, times=4)
    fake_google.inject(403, times=2, code="userRateLimitExceeded")
    started = time.monotonic()
    workload(bookings)
    converge(fake_google, bookings, "5xx/429 bursts + latency")
    assert time.monotonic() - started >= 0.5  # Retry-After honoured
    assert all(f["times"] == 0 for f in fake_google.faults)


def test_access_tokens_expire_mid_run(member_on_worker, fake_google, member, make_booking):
    bookings = make_bookings(member, make_booking)
    workload(bookings, slice(0, 12))
    fake_google.expire_access_tokens()
    workload(bookings, slice(12, None))
    converge(fake_google, bookings, "access tokens expired mid-run")
    assert CalendarToken.objects.get().status == "active"


def test_grant_revoked_mid_run_then_reconnect(member_on_worker, fake_google, member, make_booking):
    bookings = make_bookings(member, make_booking)
    workload(bookings, slice(0, 12))
    wait_until(lambda: settled(bookings[:12]), what="first half")
    fake_google.revoke_grants("member@example.com")
    workload(bookings, slice(12, None))
    wait_until(lambda: CalendarToken.objects.get().status == "needs_reauth", what="needs_reauth")
    assert landing(connect(member_on_worker, fake_google))["calendar_sync"] == "connected"
    converge(fake_google, bookings, "grant revoked mid-run, then reconnect")


def test_worker_sigkilled_mid_run(member_on_worker, worker, fake_google, member, make_booking):
    bookings = make_bookings(member, make_booking)
    fake_google.latency = 0.15
    workload(bookings)
    wait_until(lambda: len(fake_google.calls()) >= 5, what="work under way")
    worker.kill()
    killed_after = len(fake_google.calls())
    fake_google.latency = 0
    worker.start()
    time.sleep(1)
    tasks.sweep()  # beat's job: whatever the kill left unacknowledged or pending
    report = converge(fake_google, bookings, f"worker SIGKILLed after {killed_after} calls")
    assert report["confirmed"] == 18


def _manage_shell(code, env):
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_broker_cut_during_confirmations(stack, fake_google, member, make_booking, broker_url):
    """The broker (Redis or RabbitMQ, behind a relay we can cut) is gone while members confirm."""

    api = client_for(member)
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    broker = BrokerProxy(broker_url).start()
    env = {**stack.env, "CELERY_BROKER_URL": broker.url}
    outage_worker = Worker(env)
    try:
        outage_worker.start(broker_url=broker.url)
        bookings = make_bookings(member, make_booking, n=12)
        broker.stop()
        ids = ",".join(repr(str(b.pk)) for b in bookings)
        started = time.monotonic()
        out = _manage_shell(
            f"from bookings.models import Booking; from bookings import services\n"
            f"for b in Booking.objects.filter(pk__in=[{ids}]).order_by('start'): services.confirm_booking(b)\n"
            f"print('confirmed', Booking.objects.filter(status='confirmed').count())",
            env,
        )
        outage_seconds = time.monotonic() - started
        assert "confirmed 12" in out.stdout  # every confirmation succeeded with the broker down
        assert "sweeper will pick it up" in out.stderr and outage_seconds < 60  # publishing gave up fast
        assert fake_google.events("member@example.com") == {}
        broker.start()  # same port: the worker reconnects
        sweep = _manage_shell(
            "from calendar_sync.tasks import sweep; print('swept', sweep())",
            {**env, "CALENDAR_SYNC_SWEEP_STALE_AFTER": "0"},
        )
        assert "swept 12" in sweep.stdout, sweep.stdout
        report = converge(
            fake_google, bookings, f"broker cut for 12 confirmations ({outage_seconds:.1f}s incl. start-up)"
        )
        assert report["confirmed"] == 12
    finally:
        outage_worker.stop()
        broker.stop()
