"""Scaling: drain throughput with 1 and 2 worker processes, and query counts per sync task and
per status / booking-list request at 10 and 1000 bookings (constant means no N+1).

Usage: python3 dev.py bench scaling [N]
"""

import sys

from harness import Stack, table


def queries(fn):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fn()
    return len(captured.captured_queries)


def query_counts(stack, size):
    from bookings import services
    from calendar_sync import sync
    from calendar_sync.models import SyncRecord

    user, client = stack.member(f"q{size}")
    bookings = stack.bookings(user, size, status="confirmed")
    services.confirm_booking(stack.bookings(user, 1, start_in_hours=24 + size + 5)[0])  # records one change
    target = stack.bookings(user, 1, start_in_hours=24 + size + 10)[0]
    services.confirm_booking(target)
    SyncRecord.objects.bulk_create(
        [
            SyncRecord(
                source="booking",
                object_id=str(b.pk),
                owner_kind="user",
                owner_id=str(user.pk),
                state="synced",
                synced_version=1,
            )
            for b in bookings
        ]
    )
    per_sync = queries(lambda: sync.sync_object("booking", target.pk))
    status = queries(lambda: client.get("/api/calendar-sync/status"))
    listing = queries(lambda: client.get("/api/bookings/"))
    return per_sync, status, listing


def main(n=500, members=25):
    stack = Stack()
    try:
        one = stack.drain(members, n // members, concurrency=1)
        two = stack.drain(members, n // members, concurrency=2)
        small, large = query_counts(stack, 10), query_counts(stack, 1000)
        table(
            f"scaling (PostgreSQL, Redis, fake Google; {n} syncs per run; 2 CPU cores)",
            [
                (
                    "1 worker process",
                    f"{one['per_second']:.1f} syncs/s (workers {one['worker_load']:.0%} of a core, fake Google {one['fake_load']:.0%})",
                ),
                (
                    "2 worker processes",
                    f"{two['per_second']:.1f} syncs/s ({two['per_second'] / one['per_second']:.2f}x; workers {two['worker_load']:.0%}, fake Google {two['fake_load']:.0%})",
                ),
                ("queries per sync task", f"{small[0]} at 10 bookings, {large[0]} at 1000"),
                ("queries per status request", f"{small[1]} at 10 bookings, {large[1]} at 1000"),
                ("queries per booking-list request", f"{small[2]} at 10 bookings, {large[2]} at 1000 (page of 100)"),
            ],
        )
        print(
            f"\nKEY: 2 workers = {two['per_second'] / one['per_second']:.2f}x of 1; queries per sync {small[0]} -> {large[0]}, per list {small[2]} -> {large[2]}"
        )
    finally:
        stack.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
