"""Load test through the real server: gunicorn, Celery, PostgreSQL, Redis and both fake providers.

    python3 dev.py bench load [SECONDS=60] [CLIENTS=20]

1. A fresh database (`managehub_load`) and Redis db 11 (override with LOAD_DATABASE_URL /
   LOAD_BROKER_URL); the fake Google and the fake Microsoft run in this process on 127.0.0.1.
2. `gunicorn managehub.wsgi -w 2` and two Celery workers (`--concurrency=1` each) start as
   separate processes with the same settings.
3. Through the server's REST API: every member signs in for a token, half of them connect their
   own calendar over OAuth (one in four to Google, one in four to Microsoft) and staff connect the
   room calendars of most workspaces (Google and Outlook rooms).
4. CLIENTS concurrent HTTP clients (one per member, two members per workspace, disjoint time
   slots) book, confirm, reschedule and cancel for SECONDS seconds, while a fault schedule makes
   both fakes answer 503 (Retry-After 1), 500 and a 429 burst every 10 s, and SIGKILLs one worker
   (then starts a new one) at 30 s (runs shorter than that skip the kill).
5. The queue drains and the sweeper picks up what the killed worker left; every sync record must
   settle (synced at its version, or not connected) within a bound.
6. Every member calendar and every room calendar is compared with the bookings.

The last line is `KEY: missing=<n> extra=<n> duplicated=<n> ...`; the exit status is 0 only when
the calendars match the bookings exactly. Nothing leaves 127.0.0.1; every loop is bounded.
"""

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from harness import group_cpu, pct, table  # noqa: E402

from calendar_sync.testing import FakeGoogle, FakeMicrosoft  # noqa: E402  (no Django needed)

DB_URL = os.environ.get("LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/managehub_load")
BROKER = os.environ.get("LOAD_BROKER_URL", "redis://127.0.0.1:6379/11")
HOST = "127.0.0.1"
PASSWORD = "load-" + secrets.token_hex(8)
ZONES = ["Europe/Lisbon", "Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo"]
SLOTS_PER_CLIENT = 5000  # each client books its own hours: no two clients ever want the same slot
FAULT_EVERY = 10  # seconds between fault rounds at both fakes
KILL_AT = 30  # seconds into the load: SIGKILL one worker, start a new one
SETTLE_TIMEOUT = 120  # bound on waiting for every sync record to settle after the load
REQUEST_TIMEOUT = 30


def free_port():
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def recreate_database():
    import psycopg

    parts = urllib.parse.urlsplit(DB_URL)
    name = parts.path.lstrip("/")
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres", query=""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def stop_group(proc, grace=10):
    """SIGTERM a process group we started, then SIGKILL whatever is left."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            if sig == signal.SIGTERM:
                try:  # pool processes that outlived their parent
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        except subprocess.TimeoutExpired:
            continue


def machine_busy():
    """CPU seconds the whole machine has spent busy (all cores, everything running on it)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class Load:
    def __init__(self, seconds, clients):
        self.seconds, self.n_clients = seconds, clients
        self.started = time.monotonic()
        self.logs = Path(tempfile.mkdtemp(prefix="managehub-load-"))
        self.google, self.microsoft = FakeGoogle().start(), FakeMicrosoft().start()
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.env = {
            **os.environ,
            **self.google.env(),
            **self.microsoft.env(),
            "DJANGO_SETTINGS_MODULE": "managehub.settings",
            "DATABASE_URL": DB_URL,
            "CELERY_BROKER_URL": BROKER,
            # A killed worker's unacknowledged task comes back after this (the sweeper also has it).
            "CELERY_VISIBILITY_TIMEOUT": "20",
            "GOOGLE_REDIRECT_URI": f"{self.base}/api/calendar-sync/auth/google/callback",
            "MICROSOFT_REDIRECT_URI": f"{self.base}/api/calendar-sync/auth/microsoft/callback",
            "FRONTEND_URL": f"{self.base}/integrations/calendar",
            "CALENDAR_SYNC_SHARED_FRONTEND_URL": f"{self.base}/integrations/rooms",
            "SECRET_KEY": "load-bench-" + secrets.token_urlsafe(32),
            "SALT_KEY": "load-bench-salt-" + secrets.token_urlsafe(16),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOGIN_THROTTLE_RATE": "100000/min",
            "CALENDAR_SYNC_CONNECT_THROTTLE_RATE": "100000/min",
            "CALENDAR_SYNC_SWEEP_STALE_AFTER": "5",  # the sweeper this process runs at the end
            "EMAIL_URL": "consolemail://",
            "LOG_LEVEL": "WARNING",
            # The server connects members to plain-http loopback fakes: that needs DEBUG.
            "DEBUG": "1",
        }
        # The workers sync with existing grants, which needs no DEBUG (and DEBUG would record every query).
        self.worker_env = {**self.env, "DEBUG": "0"}
        os.environ.update(self.worker_env)
        self.gunicorn, self.workers = None, {}
        self.events_log = []  # (seconds into the load, what happened)

    def say(self, text):
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    # --- set-up -----------------------------------------------------------------------------
    def setup_database(self):
        recreate_database()
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        import redis

        redis.Redis.from_url(BROKER).flushdb()  # a dedicated db: nothing left from an earlier run

        from managehub.celery import app

        self.celery = app

    def create_people(self):
        """Members, staff and workspaces straight in the database (one password hash for all)."""
        from django.contrib.auth import get_user_model
        from django.contrib.auth.hashers import make_password

        from bookings.models import Workspace

        User = get_user_model()
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
        hashed = make_password(PASSWORD)
        users = [
            User(username=f"m{i:02d}", email=f"m{i:02d}@example.com", password=hashed) for i in range(self.n_clients)
        ]
        users.append(User(username="staff", email="staff@example.com", password=hashed, is_staff=True))
        User.objects.bulk_create(users)
        ids = dict(User.objects.values_list("username", "id"))
        n_workspaces = (self.n_clients + 1) // 2
        workspaces = Workspace.objects.bulk_create(
            [
                Workspace(name=f"Room {j:02d}", address=f"{j} Load St", time_zone=ZONES[j % len(ZONES)])
                for j in range(n_workspaces)
            ]
        )
        # Members: i % 4 == 0 Google, == 2 Microsoft, odd ones not connected (half). Two per workspace.
        self.members = []
        for i in range(self.n_clients):
            provider = {0: "google", 2: "microsoft"}.get(i % 4)
            name = f"m{i:02d}"
            account = None if provider is None else f"{name}@{'example.com' if provider == 'google' else 'contoso.com'}"
            self.members.append(
                {
                    "i": i,
                    "name": name,
                    "id": ids[name],
                    "provider": provider,
                    "account": account,
                    "workspace": workspaces[i // 2].pk,
                    "slots": iter(range(SLOTS_PER_CLIENT)),
                    "base": base,
                }
            )
        # Rooms: j % 5 in (0, 1) Google, (2, 3) Outlook, 4 not connected.
        self.rooms = {}
        for j, ws in enumerate(workspaces):
            provider = {0: "google", 1: "google", 2: "microsoft", 3: "microsoft"}.get(j % 5)
            if provider:
                self.rooms[ws.pk] = {
                    "provider": provider,
                    "account": f"room{j:02d}@{'example.com' if provider == 'google' else 'contoso.com'}",
                }
        self.staff_id = ids["staff"]

    # --- processes --------------------------------------------------------------------------
    def start_gunicorn(self):
        with open(self.logs / "gunicorn.log", "ab") as log:
            self.gunicorn = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "managehub.wsgi",
                    "-w",
                    "2",
                    "-b",
                    f"{HOST}:{self.port}",
                    "--timeout",
                    "60",
                    "--graceful-timeout",
                    "5",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_gunicorn(self):
        deadline = time.monotonic() + 30
        while True:
            if self.gunicorn.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.gunicorn.returncode}); see {self.logs / 'gunicorn.log'}")
            try:
                requests.get(f"{self.base}/accounts/login/", timeout=2)
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not answer; see {self.logs / 'gunicorn.log'}") from None
                time.sleep(0.2)

    def start_worker(self, label):
        name = f"load-{label}@{HOST}"
        with open(self.logs / f"worker-{label}.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "managehub",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=1",
                    "-l",
                    "warning",
                    "--without-gossip",
                    "--without-mingle",
                    "-Q",
                    "calendar_sync,calendar_sync.bulk",
                    "-n",
                    name,
                ],
                cwd=ROOT,
                env=self.worker_env,
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers[label] = proc
        return name

    def wait_worker(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        while not self.celery.control.ping(destination=[name], timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not answer; see {self.logs}")

    def close(self):
        for proc in self.workers.values():
            stop_group(proc)
        stop_group(self.gunicorn)
        self.google.stop()
        self.microsoft.stop()

    # --- through the API --------------------------------------------------------------------
    def sign_in(self, username):
        session = requests.Session()
        response = session.post(
            f"{self.base}/api/auth/token/", json={"username": username, "password": PASSWORD}, timeout=REQUEST_TIMEOUT
        )
        assert response.status_code == 200, (username, response.status_code, response.text[:300])
        session.headers["Authorization"] = f"Token {response.json()['token']}"
        return session

    def connect(self, session, provider, account, root=""):
        """The OAuth flow as a browser walks it: consent URL from the API, the fake's consent page, the callback.

        Each flow in its own browser (cookie jar) with the member's token: flows of one member run
        in parallel here, and a browser's flow cookie is cleared when one of its flows completes.
        """
        fake = self.google if provider == "google" else self.microsoft
        fake.add_account(account)
        browser = requests.Session()
        browser.headers.update(session.headers)
        response = browser.get(f"{self.base}/api/calendar-sync/{root}auth/{provider}", timeout=REQUEST_TIMEOUT)
        assert response.status_code == 200, (account, response.status_code, response.text[:300])
        location = fake.consent(response.json()["authorization_url"], account=account)
        assert location.startswith(self.base), location
        landing = browser.get(location, allow_redirects=False, timeout=REQUEST_TIMEOUT)
        assert landing.status_code == 302 and "calendar_sync=connected" in landing.headers["Location"], (
            account,
            landing.status_code,
            landing.headers.get("Location"),
        )

    def prepare_clients(self):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            sessions = list(pool.map(self.sign_in, [m["name"] for m in self.members] + ["staff"]))
        self.staff = sessions.pop()
        for member, session in zip(self.members, sessions, strict=True):
            member["session"] = session
        with ThreadPoolExecutor(6) as pool:
            jobs = [
                pool.submit(self.connect, m["session"], m["provider"], m["account"])
                for m in self.members
                if m["provider"]
            ]
            jobs += [
                pool.submit(self.connect, self.staff, r["provider"], r["account"], f"shared/workspace/{ws}/")
                for ws, r in self.rooms.items()
            ]
            for job in jobs:
                job.result()

    # --- the load ---------------------------------------------------------------------------
    @staticmethod
    def new_stats():
        return {
            "lock": threading.Lock(),
            "times": defaultdict(list),
            "by_action": defaultdict(list),
            "by_provider": defaultdict(list),
            "status": Counter(),
            "conflicts": 0,
        }

    def call(self, member, stats, action, method, path, body=None):
        """One timed request; (response or None, status)."""
        started = time.perf_counter()
        try:
            response = member["session"].request(method, f"{self.base}{path}", json=body, timeout=REQUEST_TIMEOUT)
            status = response.status_code
        except requests.RequestException as exc:
            response, status = None, type(exc).__name__
        elapsed = time.perf_counter() - started
        group = "connected" if member["provider"] else "not connected"
        with stats["lock"]:
            stats["times"][group].append(elapsed)
            stats["by_action"][(group, action)].append(elapsed)
            stats["by_provider"][member["provider"] or "none"].append(elapsed)
            stats["status"][status] += 1
            stats["conflicts"] += status == 409
        return (response if isinstance(status, int) and 200 <= status < 300 else None), status

    @staticmethod
    def span(member):
        """A fresh half-hour slot of this member's own (never reused, never another member's)."""
        slot = next(member["slots"], None)
        if slot is None:
            return None
        start = member["base"] + timedelta(hours=member["i"] * SLOTS_PER_CLIENT + slot)
        return {"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat()}

    def book(self, member, stats, confirm=True):
        times = self.span(member)
        if times is None:
            return None
        created, _ = self.call(
            member,
            stats,
            "create",
            "POST",
            "/api/bookings/",
            {"workspace": member["workspace"], "title": f"Load {member['name']}", **times},
        )
        if created is None or not confirm:
            return created and created.json()["id"]
        booking = created.json()["id"]
        confirmed, _ = self.call(member, stats, "confirm", "POST", f"/api/bookings/{booking}/confirm/")
        return booking if confirmed is not None else None

    def baseline(self, rounds=8):
        """Unloaded latency: one request at a time, a few members in turn (book, confirm, reschedule, cancel)."""
        stats = self.new_stats()
        picks = [next(m for m in self.members if m["provider"] == p) for p in ("google", "microsoft", None)]
        picks.append(next(m for m in self.members if m["provider"] is None and m is not picks[2]))
        for _ in range(rounds):
            for member in picks:
                booking = self.book(member, stats)
                times = self.span(member)
                if booking and times:
                    self.call(member, stats, "reschedule", "PATCH", f"/api/bookings/{booking}/", times)
                    self.call(member, stats, "cancel", "POST", f"/api/bookings/{booking}/cancel/")
        return stats

    def client(self, member, stop_at, stats):
        """One member's HTTP client, without pause: book+confirm 45 %, reschedule 30 %, cancel 25 %."""
        rng = random.Random(member["i"])
        live, pending = [], []
        while time.monotonic() < stop_at:
            roll = rng.random()
            if not live or roll < 0.45:  # book and confirm (now and then leave one pending)
                if member["slots"].__length_hint__() == 0:
                    break
                booking = self.book(member, stats, confirm=roll >= 0.04)
                if booking:
                    (live if roll >= 0.04 else pending).append(booking)
            elif roll < 0.75:  # reschedule one of the member's confirmed bookings to a fresh slot
                times = self.span(member)
                if times is None:
                    break
                self.call(member, stats, "reschedule", "PATCH", f"/api/bookings/{rng.choice(live)}/", times)
            else:  # cancel one (a pending one now and then)
                target = pending.pop() if pending and roll > 0.97 else live.pop(rng.randrange(len(live)))
                self.call(member, stats, "cancel", "POST", f"/api/bookings/{target}/cancel/")

    def faults(self, started, stop_at, stop):
        """Every FAULT_EVERY s: 503s with Retry-After 1, a 500 and a 429 burst at both fakes; at KILL_AT: SIGKILL a worker."""
        schedule = [(t, "faults") for t in range(5, self.seconds, FAULT_EVERY)] + [(KILL_AT, "kill")]
        schedule.sort()
        for at, what in schedule:
            if stop.wait(max(0.0, started + at - time.monotonic())) or time.monotonic() >= stop_at:
                return
            if what == "faults":
                self.google.inject(503, times=3, retry_after=1)
                self.google.inject(500, times=1)
                self.google.inject(429, times=6, retry_after=1, code="rateLimitExceeded")
                self.microsoft.inject(503, times=3, retry_after=1)
                self.microsoft.inject(500, times=1)
                self.microsoft.inject(429, times=6, retry_after=1)
                self.events_log.append((time.monotonic() - started, "503x3 + 500x1 + 429x6 at each fake"))
            else:
                victim = self.workers["a"]
                self.cpu["a"] = group_cpu(victim.pid) - self.cpu["a"]
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
                self.events_log.append((time.monotonic() - started, f"SIGKILL worker a (pid {victim.pid})"))
                name = self.start_worker("c")
                t0 = time.monotonic()
                self.wait_worker(name)
                self.events_log.append(
                    (time.monotonic() - started, f"worker c answering ({time.monotonic() - t0:.1f} s to start)")
                )

    def progress(self, started, stop, stats):
        import redis

        broker = redis.Redis.from_url(BROKER)
        last = 0
        while not stop.wait(10):
            with stats["lock"]:
                total = sum(stats["status"].values())
            self.say(
                f"load {time.monotonic() - started:5.1f}s: {total} requests ({(total - last) / 10:.0f}/s), queue {broker.llen('celery')}"
            )
            last = total

    def run_load(self):
        stats = self.new_stats()
        stop = threading.Event()
        self.cpu = {label: group_cpu(proc.pid) for label, proc in [("gunicorn", self.gunicorn), *self.workers.items()]}
        machine, own = machine_busy(), time.process_time()
        self.loadavg = [os.getloadavg()[0]]
        started = time.monotonic()
        stop_at = started + self.seconds
        clients = [threading.Thread(target=self.client, args=(m, stop_at, stats), name=m["name"]) for m in self.members]
        helpers = [
            threading.Thread(target=self.faults, args=(started, stop_at, stop), daemon=True),
            threading.Thread(target=self.progress, args=(started, stop, stats), daemon=True),
        ]
        for thread in clients + helpers:
            thread.start()
        for thread in clients:
            thread.join(self.seconds + 2 * REQUEST_TIMEOUT)
        self.load_seconds = time.monotonic() - started
        for label, proc in [("gunicorn", self.gunicorn), *self.workers.items()]:
            if proc.poll() is None:
                self.cpu[label] = group_cpu(proc.pid) - self.cpu.get(label, 0)
        self.cpu["machine"], self.cpu["bench"] = machine_busy() - machine, time.process_time() - own
        self.loadavg.append(os.getloadavg()[0])
        stop.set()
        helpers[0].join(40)  # a worker restart under way finishes first
        self.load_started_wall = datetime.now(UTC) - timedelta(seconds=time.monotonic() - started)
        self.load_ended_wall = datetime.now(UTC)
        return stats

    # --- after the load ---------------------------------------------------------------------
    def settle(self):
        """Wait (bounded) until every sync record is synced at its version or not connected; sweep when the queue is empty."""
        import redis
        from django.db.models import F, Q

        from calendar_sync.models import SyncRecord
        from calendar_sync.tasks import sweep

        broker = redis.Redis.from_url(BROKER)
        unsettled = SyncRecord.objects.exclude(
            Q(state=SyncRecord.State.SYNCED, synced_version=F("version")) | Q(state=SyncRecord.State.NOT_CONNECTED)
        )
        started = time.monotonic()
        deadline, swept, last_sweep = started + SETTLE_TIMEOUT, 0, 0.0
        while True:
            left = unsettled.count()
            if left == 0:
                return time.monotonic() - started, swept, 0
            if time.monotonic() > deadline:
                return time.monotonic() - started, swept, left
            if broker.llen("celery") == 0 and time.monotonic() - last_sweep > 3:
                swept += sweep()  # what the killed worker held, or what lost its task: re-enqueued
                last_sweep = time.monotonic()
            time.sleep(0.25)

    def compare(self):
        """Every connected calendar against the bookings: missing, extra, duplicated, stale (wrong times)."""
        from bookings.models import Booking
        from calendar_sync.providers import google as google_provider
        from calendar_sync.providers import microsoft as microsoft_provider
        from calendar_sync.sources import get_source

        source = get_source("booking")
        confirmed = list(
            Booking.objects.filter(status=Booking.Status.CONFIRMED).values_list(
                "pk", "user_id", "workspace_id", "start", "end"
            )
        )
        calendars = [
            (
                "member",
                m["provider"],
                m["account"],
                {source.event_id(pk): (s, e) for pk, u, w, s, e in confirmed if u == m["id"]},
            )
            for m in self.members
            if m["provider"]
        ]
        calendars += [
            (
                "room",
                r["provider"],
                r["account"],
                {source.event_id(pk, "workspace"): (s, e) for pk, u, w, s, e in confirmed if w == ws},
            )
            for ws, r in self.rooms.items()
        ]
        totals = {kind: Counter() for kind in ("member", "room")}
        for kind, provider, account, wanted in calendars:
            live = []  # (key, object, start, end) of every event in the calendar
            if provider == "google":
                for event_id, event in self.google.events(account).items():
                    private = (event.get("extendedProperties") or {}).get("private") or {}
                    live.append(
                        (
                            event_id,
                            private.get("calendar_sync_id") or event_id,
                            google_provider._moment(event.get("start")),
                            google_provider._moment(event.get("end")),
                        )
                    )
            else:
                for event in self.microsoft.events(account).values():
                    key = (
                        next((p.get("value") for p in event.get("singleValueExtendedProperties") or []), None)
                        or f"?{event['id']}"
                    )
                    live.append(
                        (
                            key,
                            key,
                            microsoft_provider._moment(event.get("start")),
                            microsoft_provider._moment(event.get("end")),
                        )
                    )
            keys = {key for key, *_ in live}
            per_object = Counter(obj for _, obj, *_ in live)
            stale = sum(1 for key, _, s, e in live if key in wanted and (s, e) != wanted[key])
            totals[kind].update(
                {
                    "calendars": 1,
                    "wanted": len(wanted),
                    "events": len(live),
                    "missing": len(set(wanted) - keys),
                    "extra": len(keys - set(wanted)),
                    "duplicated": sum(1 for n in per_object.values() if n > 1),
                    "stale": stale,
                }
            )
        return totals

    def sync_counts(self):
        from django.db.models import Sum

        from calendar_sync.models import AccessLog, SyncRecord

        writes = AccessLog.objects.filter(
            operation__in=["create_event", "update_event", "delete_event", "batch"],
            created_at__gte=self.load_started_wall,
        )
        ok = writes.filter(outcome="ok")
        from bookings.models import Booking

        changed = dict(Booking.objects.filter(updated_at__gte=self.load_started_wall).values_list("pk", "updated_at"))
        lag = []
        for object_id, synced in SyncRecord.objects.filter(state=SyncRecord.State.SYNCED).values_list(
            "object_id", "synced_at"
        ):
            pk = uuid.UUID(object_id)
            if pk in changed:
                lag.append(synced - changed[pk])
        return {
            "lag": [d.total_seconds() for d in lag],
            "writes_total": ok.aggregate(n=Sum("count"))["n"] or 0,
            "writes_during_load": ok.filter(created_at__lte=self.load_ended_wall).aggregate(n=Sum("count"))["n"] or 0,
            "refused": writes.exclude(outcome="ok").aggregate(n=Sum("count"))["n"] or 0,
            "records": Counter(SyncRecord.objects.values_list("state", flat=True)),
        }


def ms(value):
    return f"{value * 1000:.1f} ms"


def latency(values):
    return f"p50 {pct(values, 50) * 1000:.1f} ms · p95 {pct(values, 95) * 1000:.1f} ms"


def main(seconds=60, clients=20):
    load = Load(seconds, clients)
    try:
        load.say(f"database {urllib.parse.urlsplit(DB_URL).path.lstrip('/')}, broker {BROKER}, logs in {load.logs}")
        load.setup_database()
        load.create_people()
        load.start_gunicorn()
        names = [load.start_worker("a"), load.start_worker("b")]
        load.wait_gunicorn()
        for name in names:
            load.wait_worker(name)
        load.say(f"gunicorn (2 workers) on {load.base}, Celery workers a and b (concurrency 1 each) answering")
        load.prepare_clients()
        connected = [m for m in load.members if m["provider"]]
        load.say(
            f"{len(load.members)} members signed in; {sum(m['provider'] == 'google' for m in connected)} connected to Google, "
            f"{sum(m['provider'] == 'microsoft' for m in connected)} to Microsoft; "
            f"{len(load.rooms)} of {(clients + 1) // 2} room calendars connected "
            f"({sum(r['provider'] == 'google' for r in load.rooms.values())} Google, {sum(r['provider'] == 'microsoft' for r in load.rooms.values())} Outlook)"
        )
        idle = load.baseline()
        _, _, left = load.settle()  # the connect-time backfills and the baseline's bookings
        if left:
            raise RuntimeError(f"{left} sync records unsettled before the load")
        load.say(f"unloaded (one request at a time): {latency(sum(idle['times'].values(), []))}")
        load.say(
            f"load: {clients} clients for {seconds} s, faults every {FAULT_EVERY} s, a worker killed at {KILL_AT} s"
        )
        stats = load.run_load()
        load.say(
            f"load done in {load.load_seconds:.1f} s; waiting for the syncs to settle (at most {SETTLE_TIMEOUT} s)"
        )
        settle_seconds, swept, left = load.settle()
        load.say(f"settled in {settle_seconds:.1f} s ({swept} re-enqueued by the sweeper, {left} unsettled)")
        totals = load.compare()
        counts = load.sync_counts()
    finally:
        load.close()

    times, status, cpu = stats["times"], stats["status"], load.cpu
    requests_total = sum(status.values())
    p50 = {g: pct(times[g], 50) for g in ("connected", "not connected")}
    p95 = {g: pct(times[g], 95) for g in ("connected", "not connected")}
    ratio50, ratio95 = p50["connected"] / p50["not connected"], p95["connected"] / p95["not connected"]
    sync_seconds = load.load_seconds + settle_seconds
    syncs_per_s = counts["writes_total"] / sync_seconds
    errors = sum(n for s, n in status.items() if not isinstance(s, int) or s >= 500)
    table(
        f"requests: {clients} clients without pause for {load.load_seconds:.1f} s through gunicorn (2 sync workers)",
        [
            ("requests", f"{requests_total} ({requests_total / load.load_seconds:.1f}/s)"),
            ("statuses", ", ".join(f"{s}: {n}" for s, n in sorted(status.items(), key=lambda kv: str(kv[0])))),
            ("409 overlap (counted apart)", str(stats["conflicts"])),
            *[
                (f"{g} members ({len(times[g])} requests)", f"p50 {p50[g] * 1000:.1f} ms · p95 {p95[g] * 1000:.1f} ms")
                for g in ("connected", "not connected")
            ],
            ("ratio connected / not connected", f"p50 {ratio50:.2f} · p95 {ratio95:.2f}"),
            *[
                (f"  {action}, {group}", latency(v))
                for (group, action), v in sorted(stats["by_action"].items(), key=lambda kv: (kv[0][1], kv[0][0]))
            ],
            *[(f"  members of {p}", latency(v)) for p, v in sorted(stats["by_provider"].items())],
            *[
                (f"unloaded, {g} ({len(v)} requests one at a time)", latency(v))
                for g, v in sorted(idle["times"].items())
            ],
        ],
    )
    worker_cpu = sum(v for k, v in cpu.items() if k in ("a", "b", "c"))
    ours = cpu["gunicorn"] + worker_cpu + cpu["bench"]
    per = load.load_seconds
    table(
        "CPU during the load (cores busy, of 2)",
        [
            (
                "gunicorn, 2 workers",
                f"{cpu['gunicorn'] / per:.2f} ({cpu['gunicorn'] / max(requests_total, 1) * 1000:.1f} ms per request)",
            ),
            ("Celery, 2 worker processes (+ the restart)", f"{worker_cpu / per:.2f}"),
            ("this process: 20 HTTP clients and both fakes", f"{cpu['bench'] / per:.2f}"),
            ("everything else (PostgreSQL, Redis, other jobs)", f"{max(0.0, cpu['machine'] - ours) / per:.2f}"),
            (
                "whole machine",
                f"{cpu['machine'] / per:.2f} (1-minute load average {load.loadavg[0]:.1f} at the start, {load.loadavg[1]:.1f} at the end)",
            ),
        ],
    )
    table(
        "syncs (event writes the fakes accepted, from the access log)",
        [
            (
                "during the load",
                f"{counts['writes_during_load']} ({counts['writes_during_load'] / load.load_seconds:.1f}/s)",
            ),
            ("load + drain", f"{counts['writes_total']} in {sync_seconds:.1f} s ({syncs_per_s:.1f}/s)"),
            ("writes refused by injected faults (retried)", str(counts["refused"])),
            ("booking change -> every calendar synced", latency(counts["lag"])),
            ("sync records", ", ".join(f"{k}: {v}" for k, v in sorted(counts["records"].items()))),
            ("drain after the load", f"{settle_seconds:.1f} s, {swept} re-enqueued by the sweeper, {left} unsettled"),
            *[(f"at {t:5.1f} s", what) for t, what in load.events_log],
        ],
    )
    total = Counter()
    for kind in ("member", "room"):
        total.update(totals[kind])
    table(
        "calendars vs bookings",
        [
            (
                f"{kind} calendars ({totals[kind]['calendars']})",
                f"confirmed bookings {totals[kind]['wanted']}, events {totals[kind]['events']}, missing {totals[kind]['missing']}, "
                f"extra {totals[kind]['extra']}, duplicated {totals[kind]['duplicated']}, stale {totals[kind]['stale']}",
            )
            for kind in ("member", "room")
        ],
    )
    elapsed = time.monotonic() - load.started
    print(f"\nRun time {elapsed:.1f} s.")
    print(
        f"\nKEY: missing={total['missing']} extra={total['extra']} duplicated={total['duplicated']} stale={total['stale']} "
        f"unsettled={left} p50_ratio={ratio50:.2f} p95_ratio={ratio95:.2f} syncs_per_s={syncs_per_s:.1f} "
        f"requests={requests_total} rps={requests_total / load.load_seconds:.1f} errors={errors} conflicts={stats['conflicts']} seconds={elapsed:.0f}"
    )
    ok = not (total["missing"] or total["extra"] or total["duplicated"] or total["stale"] or left)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
