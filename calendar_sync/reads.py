"""Reading calendars — never on the confirm path.

Busy times for a member choosing a slot (briefly cached), and incremental pulls of shared
calendars into busy blocks the host's overlap rule consults.
"""

import logging
from datetime import UTC, datetime, timedelta

from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import quotas, tokens
from .conf import get_setting
from .exceptions import AuthorizationLost, NotConnected
from .models import MEMBER, AccessLog, BusyBlock, CalendarToken, SyncRecord
from .owners import Owner
from .providers import get_provider

logger = logging.getLogger(__name__)
Reason, Op = AccessLog.Reason, AccessLog.Operation
#: A full read of a shared calendar reaches this far beyond PULL_WINDOW_DAYS; incremental reads
#: follow it until time leaves less than PULL_WINDOW_DAYS ahead, then a full read starts anew.
PULL_AHEAD_MARGIN = timedelta(days=7)
#: The times a calendar can hold: a busy window outside them is refused, like a booking's dates.
EARLIEST, LATEST = datetime(1900, 1, 1, tzinfo=UTC), datetime(2999, 12, 31, tzinfo=UTC)


def active_token(owner):
    token = owner.token()
    if token is None:
        raise NotConnected("Connect a calendar first.")
    if not token.is_active:
        raise AuthorizationLost("The calendar connection needs reauthorization.", code="needs_reauth")
    return token


def _ours(owner):
    """Remote ids of the events this app wrote for `owner` (recognised even where the provider cannot say)."""
    return set(SyncRecord.objects.filter(**owner.lookup()).exclude(remote_id="").values_list("remote_id", flat=True))


def busy(owner, start, end, reason=Reason.MEMBER_REQUEST):
    """{"busy": [{start, end}], provider, calendar_id, checked_at} of the owner's chosen calendar.

    Our own events are left out (or every booking would conflict with itself). Answers are
    cached for BUSY_CACHE_SECONDS per connection as last saved (a new connection, a reconnect or
    a refresh reads afresh), calendar and window: never another account's meetings.
    """
    token = active_token(owner)
    saved = token.updated_at.timestamp() if token.updated_at else ""
    key = f"calendar_sync:busy:{token.pk}:{saved}:{token.provider}:{token.calendar_id}:{start.isoformat()}:{end.isoformat()}"
    answer = cache.get(key)
    if answer is not None:
        return answer
    provider = get_provider(token.provider)
    blocks = tokens.with_access(
        token, Op.READ_BUSY, reason, lambda access: provider.busy(access, token.calendar_id, start, end)
    )
    ours = _ours(owner)
    spans = sorted((b.start, b.end) for b in blocks if not b.ours and b.remote_id not in ours)
    answer = {
        "busy": [{"start": s, "end": e} for s, e in spans],
        "provider": token.provider,
        "calendar_id": token.calendar_id,
        "checked_at": timezone.now(),
    }
    cache.set(key, answer, get_setting("BUSY_CACHE_SECONDS"))
    return answer


@quotas.bulk()
def pull(owner, reason=Reason.SCHEDULE):
    """Read what changed in a shared calendar since the last pull and update its busy blocks.

    A first pull, or one whose cursor expired (410), reads the whole window and replaces the
    blocks. So does one whose round no longer reaches PULL_WINDOW_DAYS ahead: a cursor only
    reports changes, never the events that time brought into a window it no longer covers.
    A full read reaches PULL_AHEAD_MARGIN further, so that happens about once a week.
    Events this app wrote are never imported. Returns {"full", "blocks", "removed"}.
    """
    token = active_token(owner)
    provider = get_provider(token.provider)
    now = timezone.now()
    start, needed = now - timedelta(days=1), now + timedelta(days=get_setting("PULL_WINDOW_DAYS"))
    cursor = token.pull_cursor if token.pull_until and token.pull_until >= needed else ""
    end = token.pull_until if cursor else needed + PULL_AHEAD_MARGIN
    changes = tokens.with_access(
        token, Op.PULL, reason, lambda access: provider.changes(access, token.calendar_id, cursor or None, start, end)
    )
    ours = _ours(owner)
    keep_titles = get_setting("PULL_KEEP_TITLES")
    external = {b.remote_id: b for b in changes.blocks if not b.ours and b.remote_id not in ours and b.remote_id}
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

    Never one of our own events (imported before its id was known, e.g. after a lost answer).
    """
    ours = SyncRecord.objects.filter(**owner.lookup()).exclude(remote_id="").values("remote_id")
    blocks = BusyBlock.objects.filter(start__lt=end, end__gt=start, **owner.lookup()).exclude(remote_id__in=ours)
    return list(blocks.order_by("start"))


def forget(owner):
    """The calendar changed or was disconnected: its blocks and cursor no longer mean anything."""
    BusyBlock.objects.filter(**owner.lookup()).delete()
    CalendarToken.objects.filter(**owner.lookup()).update(pull_cursor="", pull_until=None, pulled_at=None)


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
