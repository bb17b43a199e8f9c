"""Sync throughput and latency with one worker process.

1. Drain: N confirmed bookings across many members are queued, then one worker process
   (a pool of threads) syncs them: syncs per second, and the worker's CPU time per sync, beside
   a bare google-api-python-client insert loop against the same fake Google (the floor):
   its CPU per insert and its inserts per second. Also the SQL statements of one sync, and where
   the CPU goes: the same drain in one thread (--pool=solo) and one sync alone in this process.
2. Provider latency: the same drain again with the fake Google answering every request 150 ms
   late, as the real one does in 100–300 ms: syncs per second against the first drain's.
3. Latency: bookings confirmed at a steady pace while the worker runs: time from commit to
   the event being present at Google.
Usage: python3 dev.py bench throughput [N]
"""

import statistics
import sys
import time
from datetime import datetime

from harness import Stack, pct, summary, table


def _epoch(updated):
    """The fake's `updated` stamp (RFC 3339, milliseconds, Z) as seconds since the epoch."""
    return datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp()


def _combined(drains):
    """Several drains' figures as one: syncs/s over their total time, CPU over their total syncs."""
    measured, seconds = sum(d["measured"] for d in drains), sum(d["seconds"] for d in drains)
    combined = {
        key: sum(d[key] * d["measured"] for d in drains) / measured
        for key in ("cpu_per_sync", "main_cpu_per_sync", "pool_cpu_per_sync")
    }
    combined.update(
        syncs=sum(d["syncs"] for d in drains),
        measured=measured,
        seconds=seconds,
        per_second=measured / seconds,
        worker_load=combined["cpu_per_sync"] * measured / seconds,
        fake_load=sum(d["fake_load"] * d["seconds"] for d in drains) / seconds,
    )
    return combined


# One worker process with a pool of threads: while one sync waits on Google (or PostgreSQL), the
# others run. Enough threads that waiting never idles the CPU: syncs/s × seconds per sync (the
# provider's latency plus ~10 ms of work) = 32 threads cover 200 syncs/s at 150 ms, 100 at 300 ms.
# Each thread holds one more message (prefetch), so none waits on Redis between two syncs.
POOL_THREADS = 32
WORKER_OPTIONS = ("--prefetch-multiplier=2",)
PROVIDER_LATENCY = 0.150


def main(n=2000, members=50):
    stack = Stack()
    try:
        # The floor is measured before and after the drains (the median of both runs' blocks), so
        # a slower or faster spell of this shared machine moves both figures alike.
        stack.member("floor")
        before = stack.bare_insert()
        # Two drains of N/2 at each latency, in the order 0, 150, 150, 0 ms: a busier or quieter spell
        # of the shared machine during the run weighs on both latencies alike.
        drains = {0.0: [], PROVIDER_LATENCY: []}
        for latency in (0.0, PROVIDER_LATENCY, PROVIDER_LATENCY, 0.0):
            per_member = n // 2 // members
            drains[latency].append(
                stack.drain(members, per_member, POOL_THREADS, "threads", *WORKER_OPTIONS, latency=latency)
            )
        drain, slow = _combined(drains[0.0]), _combined(drains[PROVIDER_LATENCY])
        # Where a sync's CPU goes beyond the sync itself: the same drain in one thread (--pool=solo: Celery
        # without the threads' hand-overs of the interpreter lock), and the sync alone in this process.
        solo = stack.drain(members, n // 2 // members, 1, "solo")
        here = stack.syncs_here()
        after = stack.bare_insert()
        blocks = before["blocks"] + after["blocks"]
        bare = {"cpu": statistics.median(c for c, _ in blocks), "per_second": statistics.median(r for _, r in blocks)}
        kept = (before["cpu_collection_kept"] + after["cpu_collection_kept"]) / 2
        # latency at a steady 10 confirmations per second
        from bookings import services

        user, _ = stack.member("paced")
        first_sql, again_sql = stack.statements_per_sync(user)
        bookings = stack.bookings(user, 100)
        stack.purge()
        stack.start_worker(POOL_THREADS, "threads", *WORKER_OPTIONS)
        committed = {}
        for booking in bookings:
            services.confirm_booking(booking)
            committed[booking.pk] = time.time()
            time.sleep(0.1)
        stack.wait_synced(len(bookings), bookings=bookings)
        from calendar_sync.sources import get_source

        source = get_source("booking")
        events = stack.google.events("paced@example.com")
        latency = [_epoch(events[source.event_id(b.pk)]["updated"]) - committed[b.pk] for b in bookings]
        cpu_ratio = drain["cpu_per_sync"] / bare["cpu"]
        drain_ratio = drain["per_second"] / bare["per_second"]
        latency_drain_ratio = slow["per_second"] / drain["per_second"]
        table(
            f"sync throughput and latency (PostgreSQL, Redis, 1 worker process of {POOL_THREADS} threads, fake Google on 127.0.0.1)",
            [
                (
                    "drained",
                    f"{drain['syncs']} syncs (two drains of {n // 2}, {members} members each); {drain['measured']} timed in {drain['seconds']:.1f} s",
                ),
                ("throughput", f"{drain['per_second']:.1f} syncs/s ({POOL_THREADS} threads)"),
                (
                    f"throughput, Google answering {PROVIDER_LATENCY * 1000:.0f} ms late",
                    f"{slow['per_second']:.1f} syncs/s ({slow['measured']} timed in {slow['seconds']:.1f} s;"
                    f" worker CPU per sync {slow['cpu_per_sync'] * 1000:.2f} ms)",
                ),
                (f"latency drain ratio {PROVIDER_LATENCY * 1000:.0f} ms/0 ms", f"{latency_drain_ratio:.2f}"),
                ("bare client inserts (one connection)", f"{bare['per_second']:.1f} inserts/s"),
                ("drain ratio syncs/bare inserts", f"{drain_ratio:.2f}"),
                (
                    "worker CPU per sync (all its processes)",
                    f"{drain['cpu_per_sync'] * 1000:.2f} ms"
                    f" (main process {drain['main_cpu_per_sync'] * 1000:.2f}, pool process {drain['pool_cpu_per_sync'] * 1000:.2f})",
                ),
                (
                    "  the same drain, one thread (--pool=solo)",
                    f"{solo['cpu_per_sync'] * 1000:.2f} ms ({solo['cpu_per_sync'] / bare['cpu']:.2f}x the floor)",
                ),
                (
                    "  one sync in this process, no Celery, one thread",
                    f"{here * 1000:.2f} ms ({here / bare['cpu']:.2f}x the floor)",
                ),
                ("bare client insert CPU (floor)", f"{bare['cpu'] * 1000:.2f} ms"),
                ("  the same with events() built once (not the floor)", f"{kept * 1000:.2f} ms"),
                ("CPU ratio sync/floor", f"{cpu_ratio:.2f}x"),
                (
                    "SQL statements per sync",
                    f"{first_sql} first sync, {again_sql} after a change (BEGIN and COMMIT included)",
                ),
                (
                    "CPU busy during drain",
                    f"worker {drain['worker_load']:.0%} of a core, fake Google + poller {drain['fake_load']:.0%}",
                ),
                ("commit -> event present (100 at 10/s)", summary(latency)),
            ],
        )
        print(
            f"\nKEY: cpu_ratio={cpu_ratio:.2f} latency_drain_ratio={latency_drain_ratio:.2f} drain_ratio={drain_ratio:.2f}"
            f" syncs_per_s={drain['per_second']:.1f} syncs_per_s_at_{PROVIDER_LATENCY * 1000:.0f}ms={slow['per_second']:.1f}"
            f" bare_inserts_per_s={bare['per_second']:.1f}"
            f" cpu_per_sync_ms={drain['cpu_per_sync'] * 1000:.2f} bare_insert_cpu_ms={bare['cpu'] * 1000:.2f}"
            f" solo_cpu_per_sync_ms={solo['cpu_per_sync'] * 1000:.2f} in_process_cpu_per_sync_ms={here * 1000:.2f}"
            f" statements_per_sync={first_sql} statements_per_resync={again_sql} latency_p50_ms={pct(latency, 50) * 1000:.1f}"
        )
    finally:
        stack.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
