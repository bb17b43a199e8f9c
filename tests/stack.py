"""The real stack for tests: a Celery worker process on the configured Redis broker and
PostgreSQL, talking to the fake Google. Fixtures here are imported by the test modules."""

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection

from bookings.models import Booking
from calendar_sync.conf import get_setting
from calendar_sync.sources import get_source
from managehub.celery import app as celery_app
from tests.helpers import (
    FRONTEND,
    GOOGLE_ACCOUNT,
    IN_CI,
    MS_REDIRECT,
    REDIRECT,
    client_for,
    connect,
    forget_quotas,
    landing,
)

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = GOOGLE_ACCOUNT


def wait_until(condition, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def database_url():
    """The test database's URL, for the worker processes (PostgreSQL or MySQL/MariaDB)."""
    db = connection.settings_dict
    scheme, port = {"postgresql": ("postgres", 5432), "mysql": ("mysql", 3306)}[connection.vendor]
    return (
        f"{scheme}://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or port}/{db['NAME']}"
    )


@pytest.fixture(scope="module")
def broker_url():
    url = os.environ.get("CELERY_BROKER_URL")
    if not url or connection.vendor not in ("postgresql", "mysql"):  # SQLite's test database is one process's file
        message = "needs CELERY_BROKER_URL (Redis or RabbitMQ) and a PostgreSQL or MySQL/MariaDB DATABASE_URL"
        if IN_CI:
            pytest.fail(f"CI asked for the real stack but it is missing: {message}")
        pytest.skip(message)
    return url


def queues():
    """The app's two queues, as a worker's `-Q` takes them: interactive work and bulk work."""
    return f"{get_setting('QUEUE')},{get_setting('BULK_QUEUE')}"


class Worker:
    """A `celery -A managehub worker` process with the same settings, pointed at the fake Google,
    consuming the app's queues (both unless told)."""

    def __init__(self, env, concurrency=2, queues=None, pool="prefork"):
        self.env, self.proc, self.concurrency, self.queues, self.pool = env, None, concurrency, queues, pool

    def start(self, broker_url=None):
        """Start the worker and wait until it answers a ping on its broker."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "managehub",
                "worker",
                f"--pool={self.pool}",
                f"--concurrency={self.concurrency}",
                "-l",
                os.environ.get("TEST_WORKER_LOGLEVEL", "warning"),
                "--without-gossip",
                "--without-mingle",
                "-Q",
                self.queues or queues(),
                "-n",
                f"test-{time.monotonic_ns()}@%h",
            ],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )

        def answers():
            if broker_url is None:
                return celery_app.control.ping(timeout=0.5)
            ping = [sys.executable, "-m", "celery", "-A", "managehub", "inspect", "ping", "--timeout", "1"]
            return subprocess.run(ping, cwd=ROOT, env=self.env, capture_output=True).returncode == 0

        wait_until(answers, timeout=30, what="the worker to answer")

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # any pool process left behind
            except ProcessLookupError:
                pass
            self.proc.wait()


@pytest.fixture
def stack(broker_url, fake_google, fake_microsoft, settings):
    """The worker (not yet started) and the settings it shares with this process (both fakes)."""
    env = {
        **os.environ,
        **fake_google.env(),
        **fake_microsoft.env(),
        "MICROSOFT_REDIRECT_URI": MS_REDIRECT,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url,
        "CELERY_VISIBILITY_TIMEOUT": "5",
        "GOOGLE_REDIRECT_URI": REDIRECT,
        "FRONTEND_URL": FRONTEND,
        "DJANGO_SETTINGS_MODULE": "managehub.settings",
    }
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "SWEEP_STALE_AFTER": 0}
    if not broker_url.startswith(("redis://", "rediss://")) and not env.get("CALENDAR_SYNC_QUOTA_STORAGE"):
        # RabbitMQ as broker, Redis for quotas (README, "Beyond one machine"): the workers share one count.
        env["CALENDAR_SYNC_QUOTA_STORAGE"] = os.environ.get("QUOTA_TEST_REDIS", "redis://127.0.0.1:6379/1")
        settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "QUOTA_STORAGE": env["CALENDAR_SYNC_QUOTA_STORAGE"]}
        forget_quotas()
    w = Worker(env)
    yield w
    w.stop()
    celery_app.control.purge()
    celery_app.conf.task_always_eager = True


@pytest.fixture
def member_on_worker(stack, fake_google, member):
    """The API client of a member connected to the fake Google, with a real worker started after the connect."""
    api = client_for(member)
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    stack.start()
    return api


@pytest.fixture
def worker(member_on_worker, stack):
    """The running Worker of `member_on_worker` (to kill and restart it)."""
    return stack


@pytest.fixture
def outlook_member_on_worker(stack, fake_microsoft, member):
    """A member connected to Outlook (the fake Microsoft), then a real worker started."""
    api = client_for(member)
    assert landing(connect(api, fake_microsoft))["calendar_sync"] == "connected"
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    stack.start()
    fake_microsoft.reset_log()
    return api


@pytest.fixture(scope="session", autouse=True)
def _no_stray_database_sessions(django_db_setup, django_db_blocker):
    """Before the test database is dropped, end sessions that killed workers may have left."""
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


def event_id(booking):
    return get_source("booking").event_id(booking.pk)


def matches(fake_google, bookings):
    """The calendar holds exactly one event per confirmed booking and none for the others."""
    events = fake_google.events(ACCOUNT)
    wanted = {event_id(b) for b in Booking.objects.filter(pk__in=[b.pk for b in bookings], status="confirmed")}
    return set(events) == wanted


def calendar_report(fake_google, bookings, account=ACCOUNT):
    """Compare the calendar with the bookings: counts of wanted, present, missing, extra, duplicated."""
    source = get_source("booking")
    current = {b.pk: b for b in Booking.objects.filter(pk__in=[b.pk for b in bookings])}
    wanted = {source.event_id(pk) for pk, b in current.items() if b.status == "confirmed"}
    events = fake_google.events(account)
    per_booking = Counter(
        e.get("extendedProperties", {}).get("private", {}).get("calendar_sync_id")
        for e in fake_google.events(account, include_cancelled=True).values()
    )
    return {
        "bookings": len(current),
        "confirmed": len(wanted),
        "cancelled": sum(1 for b in current.values() if b.status == "cancelled"),
        "events": len(events),
        "missing": len(wanted - set(events)),
        "extra": len(set(events) - wanted),
        "duplicated": sum(1 for n in per_booking.values() if n > 1),
    }


class BrokerProxy:
    """A TCP relay in front of the real broker (Redis or RabbitMQ) that can be cut and restored.

    Stopping it closes the listening socket and every relayed connection, so to the app the
    broker is simply gone; starting it again listens on the same port, and clients reconnect.
    """

    def __init__(self, broker_url):
        parts = urllib.parse.urlsplit(broker_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or {"redis": 6379, "amqp": 5672}[parts.scheme])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = urllib.parse.urlunsplit(
            parts._replace(
                netloc=f"{parts.username + ':' + parts.password + '@' if parts.username else ''}127.0.0.1:{self.port}"
            )
        )
        self.listener, self.pairs, self.lock = None, [], threading.Lock()

    def start(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()
        return self

    def stop(self):
        listener, self.listener = self.listener, None
        if listener:
            listener.close()
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for sock in (a, b):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _relay(a, b):
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (b if sock is a else a).sendall(data)
        except (OSError, ValueError):
            return
