"""Members first: how soon a member's booking change reaches their calendar, idle and while a
5,000-booking room backfill runs, in the same run on the real stack (PostgreSQL, Redis, real workers).

    python3 dev.py bench backfill [BOOKINGS=5000] [CHANGES=60] [LATENCY_MS=100] [single]

1. Workers as the README runs them: one on the interactive queue (`-Q calendar_sync`) and one on
   the bulk queue (`-Q calendar_sync.bulk`); with `single`, one worker consuming both (concurrency 2).
   Both fakes answer after LATENCY_MS, as real providers take ~100-300 ms.
2. Idle: CHANGES title changes of a member's booking in the room, one at a time: time from the
   change (before its commit) to the event changed at Google (the fake's own `updated` stamp).
3. A room calendar is connected with BOOKINGS upcoming bookings (the rate limit raised so the
   backfill runs as fast as the machine lets it); while it runs (its progress in the connection),
   the same changes every half second until it ends (reading what to send, then sending it in
   chunks). Only samples that start and end while the backfill runs are counted.

Prints both figures, their ratio (the goal: p95 during ≤ 2 × p95 idle) and the backfill's progress.
"""

import os
import sys
import time
from datetime import datetime

from harness import Stack, pct, summary, table

ROOM_ACCOUNT = "rooms@example.com"
# The backfill as fast as the machine lets it (not the providers' per-connection limits): the worst case for members.
os.environ.setdefault("CALENDAR_SYNC_RATE_LIMIT_PER_MINUTE", "1000000")
os.environ.setdefault("CALENDAR_SYNC_QUOTAS", '{"google": {"connection": "1000000/minute", "app": "1000000/minute"}}')
MAX_SAMPLES = 200  # changes during the backfill, at most


def _epoch(updated):
    """The fake's `updated` stamp (RFC 3339, milliseconds, Z) as seconds since the epoch."""
    return datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp()


def change(stack, booking, account, n):
    """Change the booking's title; seconds until the member's event shows it (the fake's stamp)."""
    from bookings import services
    from calendar_sync.sources import get_source

    title = f"Change {n}"
    key = get_source("booking").event_id(booking.pk)
    started = time.time()
    services.update_booking(booking, title=title)
    deadline = time.monotonic() + 60
    while True:
        event = stack.google.events(account).get(key)
        if event and event["summary"].startswith(title):
            return _epoch(event["updated"]) - started
        if time.monotonic() > deadline:
            raise RuntimeError(f"change {n} did not reach the calendar")
        time.sleep(0.005)


def running(owner_id):
    from calendar_sync.models import CalendarToken

    token = CalendarToken.objects.filter(owner_kind="workspace", owner_id=str(owner_id)).first()
    return token is not None and bool(token.bulk_kind), token


def connect_room(stack, workspace):
    """Staff connect the workspace's room calendar through the real OAuth flow (DEBUG only while connecting)."""
    from django.contrib.auth import get_user_model
    from django.test import override_settings

    from tests.helpers import client_for
    from tests.helpers import connect_room as walk

    staff = get_user_model().objects.create_user("staff", password="x", is_staff=True)
    stack.google.add_account(ROOM_ACCOUNT)
    with override_settings(DEBUG=True):
        response = walk(client_for(staff), stack.google, workspace, ROOM_ACCOUNT)
    assert "calendar_sync=connected" in response["Location"], response["Location"]


def main(bookings=5000, changes=60, latency_ms=100, single=False):
    stack = Stack()
    try:
        from django.contrib.auth import get_user_model
        from django.utils import timezone

        from bookings.models import Booking, Workspace

        stack.google.latency = latency_ms / 1000
        if single:
            stack.start_worker(2)
            workers = "one worker, -Q calendar_sync,calendar_sync.bulk, concurrency 2"
        else:
            stack.start_worker(2, queues="calendar_sync")
            stack.start_worker(1, queues="calendar_sync.bulk", nice=10)
            workers = (
                "two workers: -Q calendar_sync (concurrency 2), nice -n 10 … -Q calendar_sync.bulk (concurrency 1)"
            )
        user, _ = stack.member("alice")
        account = f"{user.username}@example.com"
        room = Workspace.objects.create(name="Main room", address="1 Bench St", time_zone="Europe/Lisbon")
        crowd = get_user_model().objects.create_user("crowd", password="x")
        start = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)
        Booking.objects.bulk_create(  # no signals: only the room's backfill will send them
            Booking(
                user=crowd,
                workspace=room,
                title=f"B{i}",
                status="confirmed",
                start=start + timezone.timedelta(hours=i),
                end=start + timezone.timedelta(hours=i, minutes=30),
            )
            for i in range(bookings)
        )
        mine = Booking.objects.create(
            user=user,
            workspace=room,
            title="Change 0",
            status="confirmed",
            start=start - timezone.timedelta(hours=3),
            end=start - timezone.timedelta(hours=2),
        )
        stack.wait_synced(1, bookings=[mine])

        idle = []
        for n in range(1, changes + 1):
            idle.append(change(stack, mine, account, n))
            time.sleep(0.1)

        began = time.monotonic()
        connect_room(stack, room)
        while not running(room.pk)[0]:
            if time.monotonic() - began > 60:
                raise RuntimeError("the backfill did not start")
            time.sleep(0.05)
        during, sending, n, seen = [], [], changes, []
        while len(during) < MAX_SAMPLES:  # changes every half second while the backfill runs, all its phases
            before, token = running(room.pk)
            if not before:
                break
            seen.append((token.bulk_done, token.bulk_total))
            n += 1
            took = change(stack, mine, account, n)
            if running(room.pk)[0]:
                during.append(took)
                if token.bulk_total:
                    sending.append(took)  # its chunks going out (before: reading what to send)
            time.sleep(0.5)
        while running(room.pk)[0]:
            if time.monotonic() - began > 900:
                raise RuntimeError("the backfill did not end within 15 minutes")
            time.sleep(0.2)
        backfill_seconds = time.monotonic() - began
        room_events = len(stack.google.events(ROOM_ACCOUNT))
    finally:
        stack.close()

    ratio = pct(during, 95) / pct(idle, 95) if during else float("nan")
    table(
        f"Members first: a member's change during a {bookings}-booking room backfill ({workers}; fakes at {latency_ms} ms)",
        [
            ("idle", f"{summary(idle)} ({len(idle)} changes)"),
            ("during the backfill", f"{summary(during)} ({len(during)} changes)" if during else "no sample"),
            ("… while it sends", f"{summary(sending)} ({len(sending)} changes)" if sending else "no sample"),
            ("p95 during / p95 idle", f"{ratio:.2f} (goal ≤ 2)"),
            ("backfill progress seen", ", ".join(f"{d}/{t}" for d, t in seen[:: max(1, len(seen) // 8)])),
            ("backfill", f"{room_events} events in the room calendar, {backfill_seconds:.1f} s from connect to done"),
        ],
    )
    print(f"\nbackfill_latency_ratio={ratio:.2f}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "single"]
    main(*(int(a) for a in args), single="single" in sys.argv[1:])
