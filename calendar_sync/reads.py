"""Reading calendars — never on the confirm path.

Busy times for a member choosing a slot, from every calendar they connected (briefly cached), and incremental pulls of shared
calendars into busy blocks the host's overlap rule consults.
"""

import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from django import db
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import quotas, remote, tokens
from .conf import get_setting
from .exceptions import (
    AuthorizationLost,
    CalendarSyncError,
    ConfigurationError,
    NotConnected,
    TransientError,
    Undecryptable,
)
from .models import MEMBER, AccessLog, BusyBlock, CalendarToken, SeriesRecord, SyncRecord
from .owners import Owner
from .providers import get_provider
from .sources import get_source

logger = logging.getLogger(__name__)
Reason, Op = AccessLog.Reason, AccessLog.Operation
#: A full read of a shared calendar reaches this far beyond PULL_WINDOW_DAYS; incremental reads
#: follow it until time leaves less than PULL_WINDOW_DAYS ahead, then a full read starts anew.
PULL_AHEAD_MARGIN = timedelta(days=7)
#: The times a calendar can hold: a busy window outside them is refused, like a booking's dates.
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(2999, 12, 31, tzinfo=UTC)


def active_token(owner):
    """The owner's write connection, when usable: NotConnected or AuthorizationLost otherwise."""
    token = owner.token()
    if token is None:
        raise NotConnected("Connect a calendar first.")
    if not token.is_active:
        raise AuthorizationLost("The calendar connection needs reauthorization.", code="needs_reauth")
    return token


class _Ours:
    """What names the events this app wrote for `owner`, recognised even where the provider cannot say:
    the remote ids we stored and, for an id that carries a UID (an ICS block's id is the event's UID,
    `#n` added for its later occurrences), our keys: `<key>@google.com` in Google's secret iCal
    address, `<key>@calendar-sync` over CalDAV. The keys are derived only when such an id is met.
    An occurrence of a recurring event is ours when its series is (`owns`: the master's id)."""

    def __init__(self, owner):
        self.records = SyncRecord.objects.filter(**owner.lookup())
        self.ids = set(self.records.exclude(remote_id="").values_list("remote_id", flat=True))
        self.ids |= _series_ids(owner)
        self._keys = None

    def keys(self):
        if self._keys is None:
            self._keys = set()
            for source, object_id, destination in self.records.values_list("source", "object_id", "destination"):
                try:
                    self._keys.add(get_source(source).event_id(object_id, destination))
                except ConfigurationError:  # a source the host no longer configures: its stored ids still count
                    pass
        return self._keys

    def __contains__(self, remote_id):
        if not remote_id:
            return False
        uid = remote_id.partition("#")[0]
        if remote_id in self.ids or uid in self.ids or remote_id.rpartition("_")[0] in self.ids:
            return True  # ...or an instance of our series' event (Google: "<event id>_<original start>")
        key = uid.rpartition("@")[0]
        return bool(key) and key in self.keys()

    def owns(self, remote_id, series_id=""):
        """Whether the event `remote_id`, an occurrence of `series_id` when set, is one we wrote."""
        return remote_id in self or (bool(series_id) and series_id in self)


def busy(owner, start, end, reason=Reason.MEMBER_REQUEST):
    """Busy times in [start, end) from every connection of the owner that counts for conflicts:
    {"busy": [{start, end, connection[, title]}], "errors": [{connection, code}], provider,
    calendar_id (the write connection's), checked_at}.

    The connections are read in parallel, each through `tokens.with_access`; one that fails is
    named in `errors` and never hides the others. Only when every one failed is that error raised
    (nothing is known). Our own events are left out in every calendar (by the provider's mark or
    by the ids we stored), or every booking would conflict with itself. Titles only with
    PULL_KEEP_TITLES. NotConnected when the owner has no connection at all.
    """
    rows = list(owner.connections())
    if not rows:
        raise NotConnected("Connect a calendar first.")
    counting = [token for token in rows if token.conflicts]
    if len(counting) > 1:
        workers = min(len(counting), BUSY_PARALLEL)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="calendar-busy") as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, _in_thread, _blocks, t, start, end, reason)
                for t in counting
            ]
            outcomes = [future.result() for future in futures]
    else:
        outcomes = [_caught(_blocks, t, start, end, reason) for t in counting]
    if counting and all(isinstance(o, Exception) for o in outcomes):
        raise outcomes[0]
    ours, titles = _Ours(owner), get_setting("PULL_KEEP_TITLES")
    spans, errors = [], []
    for token, outcome in zip(counting, outcomes, strict=True):
        if isinstance(outcome, Exception):
            errors.append({"connection": token.pk, "code": _error_code(outcome)})
            continue
        for b_start, b_end, remote_id, summary, series_id in outcome:
            if ours.owns(remote_id, series_id):
                continue
            spans.append(
                {"start": b_start, "end": b_end, "connection": token.pk, **({"title": summary} if titles else {})}
            )
    spans.sort(key=lambda span: (span["start"], span["end"], str(span["connection"])))
    write = next((token for token in rows if token.write), None)
    return {
        "busy": spans,
        "errors": errors,
        "provider": write.provider if write else None,
        "calendar_id": write.calendar_id if write else None,
        "checked_at": timezone.now(),
    }


#: At most this many connections are read at once for one busy answer.
BUSY_PARALLEL = 8


def _blocks(token, start, end, reason):
    """[(start, end, remote id, title, series id)] of one connection's calendar in the window, its events marked
    as ours left out. Cached for BUSY_CACHE_SECONDS per connection as last saved (a reconnect, a
    refresh or a setting change reads afresh), calendar and window: never another account's."""
    if not token.is_active:
        raise AuthorizationLost("The calendar connection needs reauthorization.", code="needs_reauth")
    saved = token.updated_at.timestamp() if token.updated_at else ""
    key = f"calendar_sync:busy2:{token.pk}:{saved}:{token.provider}:{token.calendar_id}:{start.isoformat()}:{end.isoformat()}"
    blocks = cache.get(key)
    if blocks is None:
        provider = get_provider(token.provider)
        found = tokens.with_access(
            token, Op.READ_BUSY, reason, lambda access: provider.busy(access, token.calendar_id, start, end)
        )
        blocks = [(b.start, b.end, b.remote_id, b.summary or "", b.series_id) for b in found if not b.ours]
        cache.set(key, blocks, get_setting("BUSY_CACHE_SECONDS"))
    return blocks


def _caught(call, *args):
    """`call(*args)`, or the exception it raised (so one connection's failure stays its own)."""
    try:
        return call(*args)
    except Exception as exc:  # noqa: BLE001 - reported per connection; an unexpected one is logged
        if not isinstance(exc, CalendarSyncError):
            logger.exception("busy read of a calendar connection failed unexpectedly")
        return exc


def _in_thread(call, *args):
    """`_caught` in a pool thread, closing the database connection the thread opened."""
    try:
        return _caught(call, *args)
    finally:
        db.connections.close_all()


def _error_code(exc):
    """The code a client sees for one connection's failure: the same words the API's errors use."""
    if isinstance(exc, Undecryptable):
        return "unavailable"
    if isinstance(exc, AuthorizationLost):
        return "needs_reauth"
    if isinstance(exc, TransientError):
        return "provider_unavailable"
    return exc.code if isinstance(exc, CalendarSyncError) else "error"


@quotas.bulk()
def pull(owner, reason=Reason.SCHEDULE):
    """Read what changed in a shared calendar since the last pull and update its busy blocks; in a
    member's write calendar, report what the member changed in our events (`remote.review`).

    A first pull, or one whose cursor expired (410), reads the whole window and replaces the
    blocks. So does one whose round no longer reaches PULL_WINDOW_DAYS ahead: a cursor only
    reports changes, never the events that time brought into a window it no longer covers.
    A full read reaches PULL_AHEAD_MARGIN further, so that happens about once a week.
    Events this app wrote are never imported. Returns {"full", "blocks", "removed"}.
    """
    token = active_token(owner)
    if owner.is_member and not remote.watched(token):
        return {"full": False, "blocks": 0, "removed": 0, "reported": 0}  # nothing of ours to follow there
    provider = get_provider(token.provider)
    now = timezone.now()
    start, needed = now - timedelta(days=1), now + timedelta(days=get_setting("PULL_WINDOW_DAYS"))
    cursor = token.pull_cursor if token.pull_until and token.pull_until >= needed else ""
    end = token.pull_until if cursor else needed + PULL_AHEAD_MARGIN
    changes = tokens.with_access(
        token, Op.PULL, reason, lambda access: provider.changes(access, token.calendar_id, cursor or None, start, end)
    )
    if owner.is_member:  # a member's write calendar: only what they changed in our events
        reported = remote.review(owner, token, changes, start, end, reason, read_at=now)
        CalendarToken.objects.filter(pk=token.pk).update(pull_cursor=changes.cursor, pull_until=end, pulled_at=now)
        return {"full": changes.full, "blocks": 0, "removed": 0, "reported": reported}
    ours = _Ours(owner)
    keep_titles = get_setting("PULL_KEEP_TITLES")
    external = {
        b.remote_id: b for b in changes.blocks if not b.ours and b.remote_id and not ours.owns(b.remote_id, b.series_id)
    }
    gone = set(changes.removed) | {b.remote_id for b in changes.blocks if b.remote_id not in external}
    blocks = BusyBlock.objects.filter(**owner.lookup())
    with transaction.atomic():
        if changes.full:
            blocks.delete()
        else:
            blocks.filter(remote_id__in=gone | set(external)).delete()
        BusyBlock.objects.bulk_create(
            [
                BusyBlock(
                    remote_id=b.remote_id[:1024],
                    series_id=b.series_id[:1024],
                    start=b.start,
                    end=b.end,
                    summary=(b.summary or "")[:255] if keep_titles else "",
                    **owner.lookup(),
                )
                for b in external.values()
            ]
        )
        CalendarToken.objects.filter(pk=token.pk).update(pull_cursor=changes.cursor, pull_until=end, pulled_at=now)
    return {"full": changes.full, "blocks": len(external), "removed": len(gone)}


def external_busy(owner, start, end):
    """Busy blocks of `owner`'s shared calendar overlapping [start, end) — for the host's overlap rule.

    Never one of our own events (imported before its id was known, e.g. after a lost answer), nor an
    occurrence of our own recurring event.
    """
    ours = SyncRecord.objects.filter(**owner.lookup()).exclude(remote_id="").values("remote_id")
    blocks = (
        BusyBlock.objects.filter(start__lt=end, end__gt=start, **owner.lookup())
        .exclude(remote_id__in=ours)
        .exclude(series_id__in=ours)
    )
    series = _series_ids(owner)  # our series' events, and the occurrences of each
    blocks = blocks.exclude(remote_id__in=series).exclude(series_id__in=series)
    return list(blocks.order_by("start"))


def _series_ids(owner):
    """The remote ids of the series' events we wrote in the owner's calendar (one per series)."""
    return set(SeriesRecord.objects.filter(**owner.lookup()).exclude(remote_id="").values_list("remote_id", flat=True))


def forget(owner):
    """The calendar changed or was disconnected: its blocks and cursor no longer mean anything."""
    BusyBlock.objects.filter(**owner.lookup()).delete()
    CalendarToken.objects.filter(write=True, **owner.lookup()).update(pull_cursor="", pull_until=None, pulled_at=None)


def due_pulls():
    """The calendars the scheduled pull reads: active shared ones, and members' write connections on a
    provider that reports changes to our events, not read (on schedule or on a push notification) for
    PULL_STALE_AFTER seconds. Streamed, off a partial index (WATCHED): cheap when none are due."""
    recent = timezone.now() - timedelta(seconds=get_setting("PULL_STALE_AFTER"))
    active = CalendarToken.objects.filter(status=CalendarToken.Status.ACTIVE)
    members = active.filter(owner_kind=MEMBER, write=True, provider__in=remote.providers())
    for watched in (active.filter(~Q(owner_kind=MEMBER)), members):
        for due in (watched.filter(pulled_at__isnull=True), watched.filter(pulled_at__lt=recent)):  # range scans
            for kind, pk in due.values_list("owner_kind", "owner_id").iterator(chunk_size=1000):
                yield Owner(kind, pk)


def member_owners():
    """Members whose write calendar is watched for changes to our events (active, a provider that reports them)."""
    watched = CalendarToken.objects.filter(
        owner_kind=MEMBER, write=True, status=CalendarToken.Status.ACTIVE, provider__in=remote.providers()
    )
    return [Owner(MEMBER, pk) for pk in watched.values_list("owner_id", flat=True)]


def shared_owners():
    return [
        Owner(kind, pk)
        for kind, pk in CalendarToken.objects.filter(
            ~Q(owner_kind=MEMBER), status=CalendarToken.Status.ACTIVE
        ).values_list("owner_kind", "owner_id")
    ]


def parse_window(start, end):
    """(start, end) from ISO 8601 strings, or ValueError naming the problem."""
    values = []
    for name, raw in (("start", start), ("end", end)):
        try:
            value = parse_datetime(raw or "")
        except ValueError:
            value = None
        if value is None:
            raise ValueError(f"{name}: an ISO 8601 date-time is required.")
        if timezone.is_naive(value):
            value = value.replace(tzinfo=UTC)
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 with an offset
            value = None
        if value is None or not EARLIEST <= value <= LATEST:
            raise ValueError(f"{name}: must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC).")
        values.append(value)
    if values[1] <= values[0]:
        raise ValueError("end: must be after start.")
    if values[1] - values[0] > timedelta(days=get_setting("BUSY_MAX_DAYS")):
        raise ValueError(f"end: the window may span at most {get_setting('BUSY_MAX_DAYS')} days.")
    return values[0], values[1]
