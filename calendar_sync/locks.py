"""One sync at a time per (object, destination), across workers: a database session lock.

PostgreSQL takes an advisory lock (`pg_advisory_lock`), MySQL and MariaDB a named lock
(`GET_LOCK`). Both belong to the connection, not to a transaction, and the database drops them
when the connection ends, so a killed worker never leaves one held. SQLite has no such lock and
needs none: it lets one connection write at a time, and runs with one worker.
"""

import hashlib
from contextlib import contextmanager
from typing import NamedTuple

from django.db import OperationalError, connection


class _Functions(NamedTuple):
    """A database's SQL for one lock: wait for it, take it if free, release it."""

    wait: str
    take_if_free: str
    release: str


POSTGRESQL = _Functions(
    "pg_advisory_lock(%s::bigint)", "pg_try_advisory_lock(%s::bigint)", "pg_advisory_unlock(%s::bigint)"
)
MYSQL = _Functions(
    "GET_LOCK(%s, 86400)", "GET_LOCK(%s, 0)", "RELEASE_LOCK(%s)"
)  # wait up to a day (MariaDB takes no -1)


def _functions():
    return {"postgresql": POSTGRESQL, "mysql": MYSQL}.get(connection.vendor)


def key(source_key, object_id, destination):
    """The lock's key: a bigint on PostgreSQL; a name of ≤ 64 characters on MySQL, where names are
    server-wide, so it includes the database's."""
    text = f"calendar_sync:{source_key}:{object_id}:{destination}"
    if connection.vendor == "mysql":
        return (
            "calendar_sync:"
            + hashlib.blake2b(f"{connection.settings_dict['NAME']}:{text}".encode(), digest_size=16).hexdigest()
        )
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def _call(function, keys):
    """SELECT function(key) for each key, in one statement; what each returned."""
    if not keys:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join([function] * len(keys)), keys)
        return list(cursor.fetchone())


@contextmanager
def held(source_key, object_id, destination):
    """Hold the lock of one (object, destination) for the duration of the block, waiting for it if need be.

    Without it a stale task's write could land after a newer task's, and a crash right then would
    leave the calendar wrong while the record says synced.
    """
    functions = _functions()
    if functions is None:
        yield
        return
    lock_key = key(source_key, object_id, destination)
    (taken,) = _call(functions.wait, [lock_key])
    if functions is MYSQL and taken != 1:  # 0 or NULL: not taken (PostgreSQL's returns nothing, or raises)
        raise OperationalError(f"could not take the calendar sync lock {lock_key}")
    try:
        yield
    finally:
        _call(functions.release, [lock_key])


def try_acquire(keys):
    """Take those of the locks that are free now, without waiting: [whether each was taken].
    Where the database has no such locks, every one counts as taken."""
    functions = _functions()
    return (
        [True] * len(keys)
        if functions is None
        else [taken in (True, 1) for taken in _call(functions.take_if_free, keys)]
    )


def release(keys):
    """Release locks taken by `try_acquire` on this connection."""
    functions = _functions()
    if functions is not None:
        _call(functions.release, keys)
