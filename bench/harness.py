"""Shared set-up for the benchmarks: PostgreSQL, Redis, real Celery workers and the fake Google.

Each benchmark calls `Stack()` first: it points the project at a fresh database
(`managehub_bench`), a Redis broker and an in-process fake Google, runs the migrations and
sets Django up. Nothing here reaches the internet.
"""

import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from calendar_sync.testing import FakeGoogle  # noqa: E402  (no Django needed)

DB_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/managehub_bench")
BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/12")
REDIRECT = (
    "https://testserver/api/calendar-sync/auth/google/callback"  # tests.conftest.REDIRECT: its connect() checks it
)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def table(title, rows):
    """Print a small aligned table: rows are (label, value) pairs."""
    print(f"\n{title}")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")


QUEUES = "calendar_sync,calendar_sync.bulk"  # the app's queues (CALENDAR_SYNC QUEUE and BULK_QUEUE)


def group_cpu(pgid, split=False):
    """User+system CPU seconds of the live processes of one process group (a worker and its pool,
    a server and its workers); with `split`, (the group leader's, the others') instead."""
    tick = os.sysconf("SC_CLK_TCK")
    leader = others = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            if int(entry.name) == pgid:
                leader += int(fields[11]) + int(fields[12])
            else:
                others += int(fields[11]) + int(fields[12])
    return (leader / tick, others / tick) if split else (leader + others) / tick


def _recreate_database():
    import psycopg

    parts = urllib.parse.urlsplit(DB_URL)
    name = parts.path.lstrip("/")
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


class Stack:
    def __init__(self):
        self.google = FakeGoogle().start()  # answers at once on kept-alive connections (testing/server.py: no Nagle)
        self.env = {
            **os.environ,
            **self.google.env(),
            "DATABASE_URL": DB_URL,
            "CELERY_BROKER_URL": BROKER,
            "GOOGLE_REDIRECT_URI": REDIRECT,
            "FRONTEND_URL": "https://app.example.com/integrations/calendar",  # tests.conftest.FRONTEND: its landing() checks it
            "DJANGO_SETTINGS_MODULE": "managehub.settings",
            "LOG_LEVEL": "WARNING",
            "DEBUG": "0",  # on only in-process while connecting (member_connect): see there
        }
        os.environ.update(self.env)
        _recreate_database()
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from managehub.celery import app

        self.celery = app
        self.purge()
        self.workers = []
        self.drains = 0

    # --- processes ------------------------------------------------------------------------
    def purge(self):
        """Empty the app's queues, interactive and bulk (`control.purge()` empties only Celery's
        default queue: a connect-time backfill left on the bulk queue would sync a drain's bookings
        in batches, and the drain would measure the backfill)."""
        with self.celery.connection_for_write() as conn:
            for name in QUEUES.split(","):
                conn.default_channel.queue_purge(name)

    def start_worker(self, concurrency=1, pool="prefork", *options, queues=QUEUES, nice=0):
        """A worker process consuming `queues` (the app's interactive and bulk queues unless told),
        at CPU priority `nice` (a bulk worker below the interactive one)."""
        proc = subprocess.Popen(
            [
                *(["nice", "-n", str(nice)] if nice else []),
                sys.executable,
                "-m",
                "celery",
                "-A",
                "managehub",
                "worker",
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                "-l",
                "error",
                "--without-gossip",
                "--without-mingle",
                "-Q",
                queues,
                "-n",
                f"bench-{time.monotonic_ns()}@%h",
                *options,
            ],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(proc)
        deadline = time.monotonic() + 30
        while not self.celery.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
        return proc

    def stop_workers(self):
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
        self.workers = []

    def close(self):
        self.stop_workers()
        self.purge()
        self.google.stop()

    # --- data -----------------------------------------------------------------------------
    def member(self, name, connect=True):
        """A member, connected to the fake Google through the real OAuth flow."""
        from django.contrib.auth import get_user_model
        from django.test import Client

        user = get_user_model().objects.create_user(name, password="x")
        client = self.member_connect(user) if connect else Client()
        client.force_login(user)
        return user, client

    def member_connect(self, user):
        """Connect through the real OAuth flow, as the Google account <username>@example.com.

        Connecting to the plain-http loopback fake needs DEBUG (`insecure_reason(strict=True)`):
        it is on here, in this process, only while connecting. The workers run without it —
        syncing with an existing grant does not need it, and DEBUG would make Django record
        every SQL statement, which costs the very CPU the benchmarks measure.
        """
        from django.test import Client, override_settings

        from tests.conftest import connect, landing  # the tests' own OAuth walk, not a copy of it

        client = Client()
        client.force_login(user)
        account = f"{user.username}@example.com"
        self.google.add_account(account)
        with override_settings(DEBUG=True):
            assert landing(connect(client, self.google, account=account))["calendar_sync"] == "connected"
        return client

    def bookings(self, user, n, status="pending", start_in_hours=24):
        """n bookings of 30 minutes, an hour apart, in the member's own workspace (no signals)."""
        from django.utils import timezone

        from bookings.models import Booking, Workspace

        workspace = Workspace.objects.create(
            name=f"Desk of {user.username}", address="1 Bench St", time_zone="Europe/Lisbon"
        )
        start = timezone.now().replace(microsecond=0) + timezone.timedelta(hours=start_in_hours)
        return Booking.objects.bulk_create(
            [
                Booking(
                    user=user,
                    workspace=workspace,
                    title=f"B{i}",
                    status=status,
                    start=start + timezone.timedelta(hours=i),
                    end=start + timezone.timedelta(hours=i, minutes=30),
                )
                for i in range(n)
            ]
        )

    def wait_synced(self, count, timeout=600, bookings=None):
        from django.db.models import F

        from calendar_sync.models import SyncRecord

        done = SyncRecord.objects.filter(state="synced", synced_version=F("version"))
        if bookings is not None:
            done = done.filter(object_id__in=[str(b.pk) for b in bookings])
        deadline = time.monotonic() + timeout
        while done.count() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done.count()} of {count} synced")
            time.sleep(0.05)

    def drain(self, n_members, per_member, concurrency, pool="prefork", *options, latency=0.0):
        """Confirm n bookings with no worker running, then time one worker draining the queue while
        the fake Google answers each request `latency` seconds late.

        Watching costs the machine little (a count every 0.2 s over this drain's records only): a
        busy watcher would take the CPU the worker needs. The drain ends when the last record was
        synced (its `synced_at`), not when the watcher noticed.
        """
        from datetime import datetime

        from django.db.models import F, Max

        from bookings import services
        from calendar_sync.models import SyncRecord

        self.drains += 1
        users = [self.member(f"d{self.drains}m{i}")[0] for i in range(n_members)]
        self.purge()  # their (empty) connect-time backfills: not part of the measure
        before = SyncRecord.objects.aggregate(last=Max("pk"))["last"] or 0
        confirmed = []
        for user in users:
            for booking in self.bookings(user, per_member):
                services.confirm_booking(booking)
                confirmed.append(booking)
        done = SyncRecord.objects.filter(pk__gt=before, state="synced", synced_version=F("version"))
        assert SyncRecord.objects.filter(pk__gt=before).count() == len(confirmed)
        self.google.reset_log()
        self.google.latency = latency
        worker = self.start_worker(concurrency, pool, *options)
        # The worker starts consuming before it answers the ping, and each of its threads then opens
        # its database and HTTP connections on its first syncs: count only what is synced once a
        # tenth of the drain is done, against the time and the CPU from then on (the steady state).
        deadline = time.monotonic() + 600
        while done.count() < len(confirmed) // 10:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done.count()} of {len(confirmed)} synced")
            time.sleep(0.05)
        cpu_before, started, own_before = group_cpu(worker.pid, split=True), time.time(), time.process_time()
        already = done.count()
        while done.count() < len(confirmed):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done.count()} of {len(confirmed)} synced")
            time.sleep(0.2)
        main, pool = (
            after - before for after, before in zip(group_cpu(worker.pid, split=True), cpu_before, strict=True)
        )
        watched = time.time() - started
        elapsed = datetime.timestamp(done.aggregate(last=Max("synced_at"))["last"]) - started
        cpu = main + pool
        fake_load = (time.process_time() - own_before) / watched  # this process serves the fake Google
        self.stop_workers()
        self.google.latency = 0.0
        events = sum(len(self.google.events(f"{u.username}@example.com")) for u in users)
        assert events == len(confirmed), (events, len(confirmed))
        measured = len(confirmed) - already
        return {
            "syncs": len(confirmed),
            "measured": measured,
            "seconds": elapsed,
            "per_second": measured / elapsed,
            "cpu_per_sync": cpu / measured,
            "main_cpu_per_sync": main / measured,
            "pool_cpu_per_sync": pool / measured,
            "worker_load": cpu / elapsed,
            "fake_load": fake_load,
        }

    def statements_per_sync(self, user):
        """SQL statements of one sync, in this process (BEGIN and COMMIT included): (a confirmed
        booking's first sync, its resync after a change)."""
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from bookings import services
        from calendar_sync import sync

        (booking,) = self.bookings(user, 1, start_in_hours=24 * 365)
        services.confirm_booking(booking)
        with CaptureQueriesContext(connection) as first:
            sync.sync_object("booking", booking.pk)
        booking.refresh_from_db()
        services.update_booking(booking, title="Moved")
        with CaptureQueriesContext(connection) as again:
            sync.sync_object("booking", booking.pk)
        self.purge()  # the tasks those two changes enqueued: already done here
        return len(first.captured_queries), len(again.captured_queries)

    def syncs_here(self, members=10, per_member=60):
        """CPU of one first sync run in this process, one thread, no Celery and no other thread
        (`sync.sync_object` on confirmed bookings, members taken in turn so no connection's quota
        holds a sync back): the median of blocks of `members` syncs, after a warm-up block."""
        from bookings import services
        from calendar_sync import sync

        per_user = []
        for i in range(members):
            user, _ = self.member(f"here{self.drains}m{i}")
            per_user.append(self.bookings(user, per_member))
        self.purge()
        for bookings in per_user:
            for booking in bookings:
                services.confirm_booking(booking)
        self.purge()  # their sync tasks: run here instead
        blocks = []
        for round_ in zip(*per_user, strict=True):
            cpu = time.thread_time()
            for booking in round_:
                sync.sync_object("booking", booking.pk)
            blocks.append((time.thread_time() - cpu) / len(round_))
        return statistics.median(blocks[1:])

    def bare_insert(self, n=300):
        """The floor: events.insert made directly with google-api-python-client, one kept-alive
        connection, against the same fake. Returns {"cpu": CPU seconds per insert, "per_second": inserts/s,
        "blocks": [(cpu, rate)], "cpu_collection_kept": CPU seconds per insert when `events()` is built once}.

        CPU is this thread's only (`thread_time`): the fake Google serves from other threads of
        this process, and its work is no more counted here than in a worker's CPU. Each insert sends
        what a sync's create sends (`_bare_body`), so both sides serialize and send the same.
        """
        import google_auth_httplib2
        import httplib2
        from google.oauth2.credentials import Credentials
        from googleapiclient.discovery import build

        from calendar_sync.models import CalendarToken

        token = CalendarToken.objects.first()
        http = google_auth_httplib2.AuthorizedHttp(Credentials(token=token.access_token), http=httplib2.Http())
        service = build(
            "calendar",
            "v3",
            http=http,
            static_discovery=True,
            client_options={"api_endpoint": f"{self.google.url}calendar/v3/"},
        )
        bodies = iter([_bare_body() for _ in range(20 + n + n // 3)])  # made before any timing
        for _ in range(20):  # warm: connection, imports, caches
            service.events().insert(calendarId="primary", body=next(bodies), sendUpdates="none").execute()
        cpus, rates = [], []
        for _ in range(3):  # the median of three runs: one stray stall on a shared machine moves neither figure
            cpu, started = time.thread_time(), time.monotonic()
            for _ in range(n // 3):
                service.events().insert(calendarId="primary", body=next(bodies), sendUpdates="none").execute()
            cpus.append((time.thread_time() - cpu) / (n // 3))
            rates.append((n // 3) / (time.monotonic() - started))
        # For scale, not the floor: the same insert with the `events()` collection built once, as the
        # provider keeps it. Building it (its methods and their docs) is most of a bare insert's CPU.
        events = service.events()
        cpu = time.thread_time()
        for _ in range(n // 3):
            events.insert(calendarId="primary", body=next(bodies), sendUpdates="none").execute()
        return {
            "cpu": statistics.median(cpus),
            "per_second": statistics.median(rates),
            "blocks": list(zip(cpus, rates, strict=True)),
            "cpu_collection_kept": (time.thread_time() - cpu) / (n // 3),
        }


def _bare_body():
    """An event as a sync creates one for a booking (calendar_sync.providers.google `event_body`): its own
    client-chosen id (base32hex: a second insert of the same id would be a 409, not an insert), the
    booking's title, place, times in its zone, a deep link and the private marker."""
    return {
        "id": uuid.uuid4().hex,
        "status": "confirmed",
        "summary": "B7 — Desk of bare",
        "location": "Desk of bare, 1 Bench St",
        "description": "ManageHub booking at Desk of bare.\nDetails: https://app.example.com/integrations/calendar/bookings/7",
        "start": {"dateTime": "2030-01-01T10:00:00+00:00", "timeZone": "Europe/Lisbon"},
        "end": {"dateTime": "2030-01-01T10:30:00+00:00", "timeZone": "Europe/Lisbon"},
        "extendedProperties": {"private": {"calendar_sync_source": "booking", "calendar_sync_id": "7"}},
    }


def summary(values):
    return f"p50 {pct(values, 50) * 1000:.1f} ms · p95 {pct(values, 95) * 1000:.1f} ms · mean {statistics.mean(values) * 1000:.1f} ms"
