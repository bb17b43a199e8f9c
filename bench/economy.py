"""API economy: Google calls per booking lifecycle, and HTTP requests for a backfill.

Usage: python3 dev.py bench economy [BACKFILL_N]
"""

import sys
import time

from harness import Stack, table


def main(n=1000):
    stack = Stack()
    try:
        from bookings import services
        from calendar_sync.conf import get_setting

        user, _ = stack.member("life")
        (booking,) = stack.bookings(user, 1)
        stack.start_worker(1)
        stack.google.reset_log()
        services.confirm_booking(booking)
        stack.wait_synced(1)
        booking.refresh_from_db()
        later = booking.start + (booking.end - booking.start) * 4
        services.update_booking(booking, start=later, end=later + (booking.end - booking.start))
        stack.wait_synced(1)
        services.cancel_booking(booking)
        stack.wait_synced(1)
        lifecycle = [c["method"] for c in stack.google.calls()]

        # backfill: n upcoming confirmed bookings exist before the member connects
        from django.contrib.auth import get_user_model

        from calendar_sync.models import SyncRecord

        backfiller = get_user_model().objects.create_user("backfill", password="x")
        stack.bookings(backfiller, n, status="confirmed")
        stack.google.reset_log()
        started = time.monotonic()
        stack.member_connect(backfiller)
        stack.wait_synced(1 + n, timeout=900)
        took = time.monotonic() - started
        http = [r for r in stack.google.http_requests if "calendar" in r["path"]]
        parts = stack.google.calls("backfill@example.com")
        window = stack.google.max_calls_in_window("backfill@example.com", 60)
        assert len(stack.google.events("backfill@example.com")) == n
        assert SyncRecord.objects.filter(owner_kind="user", owner_id=str(backfiller.pk), state="synced").count() == n
        table(
            "Google API economy (real worker, fake Google)",
            [
                ("confirm -> reschedule -> cancel", f"{len(lifecycle)} calls: {' '.join(lifecycle)}"),
                (f"backfill of {n} bookings", f"{len(http)} HTTP requests carrying {len(parts)} calls, {took:.1f} s"),
                (
                    "most calls in any 60 s",
                    f"{window} (limit {get_setting('QUOTAS').get('google', {}).get('connection', '600/minute')})",
                ),
            ],
        )
        print(f"\nKEY: lifecycle costs {len(lifecycle)} calls; backfill of {n} takes {len(http)} HTTP requests")
    finally:
        stack.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
