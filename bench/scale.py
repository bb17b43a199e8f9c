"""Scale: what one tick of each periodic job and the hot API queries cost as the tables grow.

Fills PostgreSQL with bulk COPY at 1/100 of ROWS (10,000 sync records by default) and then at ROWS
(1,000,000): per 1,000,000 sync records, 100,000 connected members, 10,000 connected rooms,
500,000 bookings (a member and a room record each), 1,000,000 access-log rows (half past
retention) and 100,000 busy blocks, so each member and room holds as much at both sizes and only
the tables grow. Then times, best of a few runs, each inside a transaction rolled back afterwards:
the sweeper with nothing due and with 1,000 due, the health check, push-channel renewal and pull
scheduling (nothing due, then 100 rooms due), one access-log retention batch, and the status,
busy-blocks overlap, booking-list and activity queries (the real functions and views; no provider
is called: nothing is due for one, and the enqueues go to the Redis broker, purged after).
Prints each cost at both sizes, the ratio, and the EXPLAIN plans at the large size.

Usage: python3 dev.py bench scale [ROWS]         (default 1000000)
       python3 dev.py bench scale workers [N]    (drain rate with 1 and 2 worker processes, and
                                                  query counts per sync / status / list at 10 and 1000 bookings)
"""

import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from harness import DB_URL, Stack, table

PUSH_URL = "https://hub.example.com"  # renewal only looks for due channels with push on; none is due
RUNS = 15
BIG_TABLES = (
    "calendar_sync_syncrecord",
    "calendar_sync_accesslog",
    "calendar_sync_calendartoken",
    "calendar_sync_busyblock",
    "bookings_booking",
    "auth_user",
)


# --- filling ---------------------------------------------------------------------------------------
def fill(rows):
    """Empty the tables and COPY `rows` sync records' worth of data in. Returns the sizes and what to query."""
    import psycopg
    from django.db import connection

    from calendar_sync.models import CalendarToken

    f = rows / 1_000_000
    members, rooms, bookings = int(100_000 * f), int(10_000 * f), rows // 2
    logs, blocks = int(1_000_000 * f), int(100_000 * f)
    now = datetime.now(UTC).replace(microsecond=0)
    secret = CalendarToken._meta.get_field("access_token").get_db_prep_value("bench-token", connection)
    started = time.monotonic()
    with psycopg.connect(DB_URL) as db:
        db.execute(
            "TRUNCATE auth_user, bookings_workspace, bookings_booking, calendar_sync_calendartoken,"
            " calendar_sync_syncrecord, calendar_sync_accesslog, calendar_sync_busyblock,"
            " calendar_sync_oauthstate RESTART IDENTITY CASCADE"
        )
        cur = db.cursor()

        def copy(name, columns, source):
            quoted = ", ".join(f'"{c}"' for c in columns)
            with cur.copy(f"COPY {name} ({quoted}) FROM STDIN") as out:
                for row in source:
                    out.write_row(row)

        copy(
            "auth_user",
            (
                "id",
                "password",
                "is_superuser",
                "username",
                "first_name",
                "last_name",
                "email",
                "is_staff",
                "is_active",
                "date_joined",
            ),
            ((i, "!", False, f"m{i}", "", "", "", False, True, now) for i in range(1, members + 1)),
        )
        copy(
            "bookings_workspace",
            ("id", "name", "address", "time_zone", "created_at"),
            ((i, f"Room {i}", "1 Bench St", "Europe/Lisbon", now) for i in range(1, rooms + 1)),
        )
        long_ago, lately = now - timedelta(days=60), now - timedelta(hours=1)
        token_columns = (
            "id", "user_id", "owner_kind", "owner_id", "provider", "access_token", "refresh_token", "expires_at",
            "calendar_id", "scopes", "status", "last_error", "pull_cursor", "pull_until", "pulled_at",
            "push_channel", "push_resource", "push_expires_at", "created_at", "updated_at",
        )  # fmt: skip

        def tokens():
            # Nobody idle (saved an hour ago), every room pulled a minute ago with a channel live for 5 days.
            for i in range(1, members + 1):
                yield (uuid.uuid4(), i, "user", str(i), "google", secret, secret, now + timedelta(hours=1),
                       "primary", "[]", "active", "", "", None, None, "", "", None, long_ago, lately)  # fmt: skip
            for i in range(1, rooms + 1):
                yield (uuid.uuid4(), None, "workspace", str(i), "google", secret, secret, now + timedelta(hours=1),
                       "primary", "[]", "active", "", f"cursor-{i}", now + timedelta(days=370), now - timedelta(minutes=1),
                       f"channel-{i}", f"resource-{i}", now + timedelta(days=5), long_ago, lately)  # fmt: skip

        copy("calendar_sync_calendartoken", token_columns, tokens())
        ids = [uuid.uuid4() for _ in range(bookings)]
        span = 395 * 24 * 60  # bookings from a month ago to a year ahead

        def booking_rows():
            for k, pk in enumerate(ids):
                start = now - timedelta(days=30) + timedelta(minutes=(k * 37) % span)
                status = "cancelled" if k % 20 == 0 else "pending" if k % 20 == 1 else "confirmed"
                yield (
                    pk,
                    k % members + 1,
                    k % rooms + 1,
                    f"B{k}",
                    start,
                    start + timedelta(minutes=30),
                    status,
                    now,
                    now,
                )

        copy(
            "bookings_booking",
            ("id", "user_id", "workspace_id", "title", "start", "end", "status", "created_at", "updated_at"),
            booking_rows(),
        )

        def records():
            # 96 % synced, 1 % pending (just changed: not due), 1 % failed for good, 2 % not connected.
            for k, pk in enumerate(ids):
                for destination, kind, owner in (
                    ("member", "user", k % members + 1),
                    ("workspace", "workspace", k % rooms + 1),
                ):
                    bucket = (2 * k + (destination != "member")) % 100
                    state = (
                        "pending"
                        if bucket == 0
                        else "failed"
                        if bucket == 1
                        else "not_connected"
                        if bucket < 4
                        else "synced"
                    )
                    synced = state == "synced"
                    yield ("booking", str(pk), destination, kind, str(owner), 1, 1 if synced else 0, state, synced,
                           f"cs{pk.hex}" if synced else "", 0, "", None, now if synced else None, now, now)  # fmt: skip

        copy(
            "calendar_sync_syncrecord",
            ("source", "object_id", "destination", "owner_kind", "owner_id", "version", "synced_version", "state",
             "remote_may_exist", "remote_id", "attempts", "last_error", "retry_at", "synced_at", "created_at", "updated_at"),
            records(),
        )  # fmt: skip
        step = timedelta(days=180) / logs  # spread over 180 days: half past the 90 days kept

        def log_rows():
            for i in range(logs):
                member = i % 10 != 0
                uid, room = i % members + 1, i % rooms + 1
                yield (uid if member else None, f"user:{uid}" if member else f"workspace:{room}", "google",
                       "create_event", "confirmed", "ok", "", 1, now - step * i)  # fmt: skip

        copy(
            "calendar_sync_accesslog",
            ("user_id", "owner", "provider", "operation", "reason", "outcome", "object_ref", "count", "created_at"),
            log_rows(),
        )

        def block_rows():
            for i in range(blocks):
                start = now + timedelta(minutes=(i * 53) % (365 * 24 * 60))
                yield ("workspace", str(i % rooms + 1), f"ext-{i}", start, start + timedelta(hours=1), "", now)

        copy(
            "calendar_sync_busyblock",
            ("owner_kind", "owner_id", "remote_id", "start", "end", "summary", "updated_at"),
            block_rows(),
        )
        for name in ("auth_user", "bookings_workspace"):
            db.execute(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))")
    filled = time.monotonic() - started
    with psycopg.connect(DB_URL, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")
        db.execute("CHECKPOINT")  # both sizes start with the fill's writes flushed (none pending behind a delete)
    return {
        "members": members,
        "rooms": rooms,
        "bookings": bookings,
        "logs": logs,
        "blocks": blocks,
        "fill_s": filled,
        "vacuum_s": time.monotonic() - started - filled,
        "member": members // 2 + 2,  # one with access-log rows (a tenth of them are rooms')
        "room": rooms // 2 + 1,
        "now": now,
    }


# --- measuring -------------------------------------------------------------------------------------
class Timer:
    """Statements run (SQL, params, seconds) while it is installed as the connection's execute wrapper."""

    def __init__(self):
        self.statements = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.statements.append((sql, params, time.perf_counter() - started))


def measure(fn, setup=None, runs=RUNS):
    """(best DB ms, best wall ms, statements, result, statements of the best run) over `runs` runs, each in
    a transaction rolled back afterwards (a delete or an enqueue mark leaves nothing behind). DB time is
    the time spent executing statements (what grows with the tables); wall time adds Python and the
    broker (an enqueue per due item), the same at both sizes."""
    from django.db import connection, transaction

    best, wall_best = None, None
    for _ in range(runs):
        with transaction.atomic():
            if setup:
                setup()
            timer = Timer()
            with connection.execute_wrapper(timer):
                started = time.perf_counter()
                result = fn()
                wall = time.perf_counter() - started
            transaction.set_rollback(True)
        db = sum(s[2] for s in timer.statements)
        wall_best = wall if wall_best is None else min(wall, wall_best)
        if best is None or db < best[0]:
            best = (db, len(timer.statements), result, timer.statements)
    return best[0] * 1000, wall_best * 1000, best[1], best[2], best[3]


def operations(data):
    """(label, function, setup) for everything measured; functions are the real ones."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from rest_framework.test import APIRequestFactory, force_authenticate

    from bookings.api import BookingViewSet
    from bookings.models import Booking
    from calendar_sync import api, audit, channels, health, reads, tasks
    from calendar_sync.owners import Owner
    from calendar_sync.views import ActivityView

    factory = APIRequestFactory()
    user = get_user_model().objects.get(pk=data["member"])
    room = Owner("workspace", str(data["room"]))
    first_block = timedelta(minutes=((data["room"] - 1) * 53) % (365 * 24 * 60))  # see block_rows
    day = data["now"] + first_block - timedelta(hours=12)  # a day with one of the room's blocks in it
    booking_list = BookingViewSet.as_view({"get": "list"})
    activity = ActivityView.as_view()

    def view(fn, path):
        def call():
            request = factory.get(path)
            force_authenticate(request, user=user)
            response = fn(request)
            assert response.status_code == 200, response.status_code
            return len(response.data["results"])

        return call

    def make_due(n):
        def setup():
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE calendar_sync_syncrecord SET state = 'pending', updated_at = now() - interval '2 hours'"
                    " WHERE id IN (SELECT id FROM calendar_sync_syncrecord WHERE state = 'synced' ORDER BY id LIMIT %s)",
                    [n],
                )

        return setup

    def rooms_due(n):
        def setup():
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE calendar_sync_calendartoken SET pulled_at = now() - interval '2 hours' WHERE id IN"
                    " (SELECT id FROM calendar_sync_calendartoken WHERE owner_kind = 'workspace' ORDER BY owner_id LIMIT %s)",
                    [n],
                )

        return setup

    assert Booking.objects.filter(user=user).exists()
    return [
        ("sweeper, nothing due", tasks.sweep, None),
        ("sweeper, 1,000 due", tasks.sweep, make_due(1000)),
        ("health check, nothing idle", lambda: health.check()["checked"], None),
        ("push renewal, nothing due", channels.renew_all, None),
        ("pull scheduling, nothing due", tasks.pull_all, None),
        ("pull scheduling, 100 due", tasks.pull_all, rooms_due(100)),
        ("access-log retention (one batch)", audit.prune, None),
        ("status (member)", lambda: api.connection(Owner("user", str(user.pk)))["pending_syncs"], None),
        (
            "busy-blocks overlap (room, a day)",
            lambda: len(reads.external_busy(room, day, day + timedelta(days=1))),
            None,
        ),
        ("booking list (member, page)", view(booking_list, "/api/bookings/"), None),
        ("activity (member, page)", view(activity, "/api/calendar-sync/activity"), None),
    ]


def run_size(stack, rows, explain=False):
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    # Statement time must include fetching: the bench reads .iterator() results with client-side cursors.
    connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] = True
    data = fill(rows)
    print(
        f"  filled {rows:,} sync records, {data['members']:,} members, {data['rooms']:,} rooms, {data['bookings']:,} bookings,"
        f" {data['logs']:,} access-log rows, {data['blocks']:,} busy blocks in {data['fill_s']:.0f} s"
        f" (+ VACUUM ANALYZE {data['vacuum_s']:.0f} s)",
        flush=True,
    )
    results = {}
    base = settings.CALENDAR_SYNC
    for label, fn, setup in operations(data):
        # The sweeper's own runs with nothing past retention: its prune is measured on its own line.
        keep = 365 if label.startswith("sweeper") else base.get("ACCESS_LOG_RETENTION_DAYS", 90)
        # The fill's pending records and room reads are minutes old at the large size: an hour counts as
        # lately here (nothing due); the "due" setups date theirs two hours back.
        bench = {
            "PUSH_URL": PUSH_URL,
            "ACCESS_LOG_RETENTION_DAYS": keep,
            "PULL_STALE_AFTER": 3600,
            "SWEEP_STALE_AFTER": 3600,
        }
        with override_settings(CALENDAR_SYNC={**base, **bench}, ALLOWED_HOSTS=["testserver"]):
            results[label] = measure(fn, setup, runs=RUNS if setup else 3 * RUNS)
        stack.purge()
    if explain:
        print_plans(results)
    return data, results


def print_plans(results):
    from django.db import connection, transaction

    print("\nEXPLAIN at the large size (each statement of the best run that reads a table):")
    seen, seq = set(), []
    for label, (*_, statements) in results.items():
        print(f"\n### {label}")
        if all(sql in seen for sql, *_ in statements):
            print("  (the statements above)")
        for sql, params, _ in statements:
            head = sql.lstrip().split()[0].upper()
            if head not in ("SELECT", "UPDATE", "DELETE") or (head == "SELECT" and " FROM " not in sql) or sql in seen:
                continue
            seen.add(sql)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + sql, params)
                plan = [r[0] for r in cursor.fetchall()]
                transaction.set_rollback(True)
            print("  " + (sql if len(sql) < 300 else sql[:297] + "...").replace("\n", " "))
            for line in plan:
                print("     " + (line if len(line) < 220 else line[:217] + "..."))
                if "Seq Scan on" in line and any(t in line for t in BIG_TABLES):
                    seq.append(f"{label}: {line.strip()}")
    print("\nsequential scans of a large table:", "; ".join(seq) if seq else "none")


def main(rows=1_000_000):
    started = time.monotonic()
    stack = Stack()
    try:
        small_rows = rows // 100
        print(f"scale: periodic jobs and API queries at {small_rows:,} and {rows:,} sync records", flush=True)
        _, small = run_size(stack, small_rows)
        _, large = run_size(stack, rows, explain=True)
    finally:
        stack.close()
    lines, worst = [], 0.0
    for label in small:
        (sd, sw, sn, sr, _), (ld, lw, ln, lr, _) = small[label], large[label]
        ratio = ld / sd
        worst = max(worst, ratio)
        lines.append(
            (
                label,
                f"{sd:7.2f} ms {ld:7.2f} ms  x{ratio:4.2f}   (wall {sw:7.2f} / {lw:7.2f} ms; {sn}/{ln} statements; result {sr} / {lr})",
            )
        )
    table(
        f"one tick / one request: DB time at {small_rows:,} | at {rows:,} | ratio"
        f" (best of {RUNS} runs with a setup, {3 * RUNS} without)",
        lines,
    )
    print(
        f"\nKEY: worst ratio {rows:,} / {small_rows:,} = {worst:.2f} (goal <= 1.5);"
        f" whole bench {(time.monotonic() - started) / 60:.1f} min"
    )


# --- worker processes and query counts -------------------------------------------------------------
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


def workers(n=500, members=25):
    stack = Stack()
    try:
        one = stack.drain(members, n // members, concurrency=1)
        two = stack.drain(members, n // members, concurrency=2)
        small, large = query_counts(stack, 10), query_counts(stack, 1000)
        table(
            f"worker processes (PostgreSQL, Redis, fake Google; {n} syncs per run; 2 CPU cores)",
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
    if sys.argv[1:2] == ["workers"]:
        workers(int(sys.argv[2]) if len(sys.argv) > 2 else 500)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
