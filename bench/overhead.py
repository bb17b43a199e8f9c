"""Request overhead: POST /api/bookings/{id}/confirm/ for a member with a Google connection vs
one without, interleaved in one run, with a real worker syncing in the background.

Goal: p50 ratio <= 1.10 (the request path only records and enqueues).
Usage: python3 dev.py bench overhead [N]
"""

import sys
import time

from harness import Stack, pct, summary, table


def main(n=200):
    stack = Stack()
    try:
        connected_user, connected = stack.member("with")
        _, plain_client = stack.member("without", connect=False)

        from django.contrib.auth import get_user_model

        plain_user = get_user_model().objects.get(username="without")
        a, b = stack.bookings(connected_user, n), stack.bookings(plain_user, n)
        stack.start_worker(1)
        for warm in (a[0], b[0]):  # first requests pay imports and connections
            (connected if warm in a else plain_client).post(f"/api/bookings/{warm.pk}/confirm/")
        times = {"with": [], "without": []}
        for i in range(1, n):
            pairs = [("with", connected, a[i]), ("without", plain_client, b[i])]
            for label, client, booking in pairs if i % 2 else reversed(pairs):
                started = time.perf_counter()
                response = client.post(f"/api/bookings/{booking.pk}/confirm/")
                times[label].append(time.perf_counter() - started)
                assert response.status_code == 200, response.content
        stack.wait_synced(n)
        ratio50 = pct(times["with"], 50) / pct(times["without"], 50)
        ratio95 = pct(times["with"], 95) / pct(times["without"], 95)
        table(
            f"confirm request latency, {n - 1} interleaved pairs (in-process Django test client, PostgreSQL, Redis)",
            [
                ("with a Google connection", summary(times["with"])),
                ("without", summary(times["without"])),
                ("p95 ratio", f"{ratio95:.2f}"),
                ("events created meanwhile", str(sum(len(stack.google.events(f"{u}@example.com")) for u in ("with",)))),
            ],
        )
        print(f"\nKEY: confirm p50 ratio connected/unconnected = {ratio50:.2f} (goal <= 1.10)")
    finally:
        stack.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
