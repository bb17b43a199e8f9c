"""One video link per object (design decision 21): what a copy asks its calendar for, what it got.

The sync asks `plan` before a write (make a meeting, keep the one made, or none: the calendar can't)
and tells `recorded` what the provider answered; the result lives in `SyncRecord.written["conference"]`
and every change of it is reported to the host (`EventSource.conference_changed`). A Google meeting
still being made (`pending`) is read again (`reread`) until it is ready or failed. What a calendar
can make is read from the provider once after it is connected or changed, when first needed (the
capabilities endpoint, or the first write that asks for a meeting: connecting costs no extra call),
and kept on the connection (`refresh_capabilities`), so deciding costs no call.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from datetime import timedelta
from urllib.parse import urlsplit

from django.db import transaction

from . import locks, tokens
from .exceptions import CalendarSyncError
from .models import AccessLog, CalendarToken, SyncRecord
from .owners import Owner
from .providers import get_provider
from .sources import get_source
from .types import Conference, Operation

logger = logging.getLogger(__name__)

TYPES = ("google_meet", "teams")
NAMES = {"google_meet": "Google Meet", "teams": "Microsoft Teams"}
#: Seconds before each read of a meeting still pending; after the last one it is given up as failed.
REREAD_DELAYS = (2, 5, 10, 30, 60, 120, 300, 600)
MADE = ("pending", "ready")


def conference_types(token: CalendarToken | None) -> list[str]:
    """The meetings the connection's calendar can make now ([] when not connected or not active)."""
    if token is None or not token.is_active:
        return []
    return [t for t in (token.capabilities or {}).get("conference", []) if t in TYPES]


def known(token: CalendarToken) -> bool:
    """Whether what the connection's calendar can make has been read since it was connected or changed."""
    return "conference" in (token.capabilities or {})


def refresh_capabilities(token: CalendarToken, reason=AccessLog.Reason.BACKFILL) -> list[str] | None:
    """Ask the provider what the connection's calendar can make now and keep it on the connection.
    A provider that makes no meetings is not asked. None when it could not be read (nothing kept)."""
    provider = get_provider(token.provider)
    if provider.conferences:
        calendar_id = token.calendar_id
        try:
            found = tokens.with_access(
                token,
                AccessLog.Operation.LIST_CALENDARS,
                reason,
                lambda access: provider.capabilities(access, calendar_id),
            )
        except CalendarSyncError as exc:
            logger.info("calendar capabilities of %s:%s not read: %s", token.owner_kind, token.owner_id, exc.code)
            return None
    else:
        found = []
    capabilities = {"conference": [t for t in TYPES if t in found]}
    if token.capabilities != capabilities:
        CalendarToken.objects.filter(pk=token.pk).update(capabilities=capabilities)
        token.capabilities = capabilities
    return capabilities["conference"]


def usable_types(token: CalendarToken | None, reason=AccessLog.Reason.CONFIRMED) -> list[str]:
    """The meetings the calendar can make, read from the provider once when unknown. When that read
    fails: what the service can make at all, not kept (a write then asks, and a calendar that can't
    says so: the event is still written and the meeting reported failed)."""
    if token is None or not token.is_active:
        return []
    if known(token):
        return conference_types(token)
    found = refresh_capabilities(token, reason)
    return list(get_provider(token.provider).conferences) if found is None else found


def capabilities(owner: Owner) -> dict:
    """What the owner's connected write calendar can do now: {"conference": [...], "guests": bool}.
    Read from the provider once after connecting or changing calendar (when first needed)."""
    token = owner.token()
    if token is None or not token.is_active:
        return {"conference": [], "guests": False}
    if not known(token):
        refresh_capabilities(token, AccessLog.Reason.MEMBER_REQUEST)
    return {"conference": conference_types(token), "guests": get_provider(token.provider).takes_guests}


def offers(owner: Owner, requested: str) -> bool:
    """Whether the owner's write calendar can make the meeting `requested` ("auto" or a type): from
    what is known (read once when unknown, as `usable_types`)."""
    token = owner.token()
    types = usable_types(token)
    return bool(types) if requested == "auto" else requested in types


def _why(token: CalendarToken, requested: str) -> str:
    """Why this calendar makes no meeting, for the member (the provider's own note says what would)."""
    provider = get_provider(token.provider)
    if requested == "auto":
        return f"{provider.label} can make no video meeting on this calendar. {provider.conference_note}".strip()
    name = NAMES.get(requested, requested)
    if requested not in provider.conferences:
        return f"{provider.label} can't make {name} meetings."
    return f"This calendar doesn't allow {name} meetings. {provider.conference_note}".strip()


def plan(operation: Operation, token: CalendarToken | None, record: SyncRecord) -> Operation:
    """The operation with the meeting its copy is to have: one to make (status "none"), the one
    already made (never asked for again: a reschedule keeps its link), or failed with the reason
    (the event is written without one)."""
    event = operation.event
    if event is None or token is None or event.conference in ("", "none"):
        return operation
    made = (record.written or {}).get("conference") or {}
    if made.get("status") in MADE and made.get("type") and (record.remote_id or record.remote_may_exist):
        return replace(operation, conference=_conference(made))
    types = usable_types(token)
    requested = event.conference
    kind = (types[0] if types else "") if requested == "auto" else requested if requested in types else ""
    if kind:
        return replace(operation, conference=Conference(type=kind))
    failed = Conference(type="" if requested == "auto" else requested, status="failed", reason=_why(token, requested))
    return replace(operation, conference=failed)


MAX_LINK = 2048


def _checked(conference: Conference | None) -> Conference | None:
    """A meeting as it may be kept and passed on: its join link a plain https address, or none at all
    (the member can rewrite their event's conference data: a javascript: or data: link never reaches
    the booking, the room's copy or the iCal feed)."""
    if conference is None or not conference.join_url:
        return conference
    link = conference.join_url
    parts = urlsplit(link)
    if parts.scheme == "https" and parts.netloc and len(link) <= MAX_LINK and link.isprintable() and " " not in link:
        return conference
    return replace(
        conference, join_url="", status="failed", reason="The calendar gave a meeting link that is not a web address."
    )


def _conference(value: dict) -> Conference:
    return Conference(**{k: str(value.get(k) or "") for k in ("type", "join_url", "status", "reason")})


def recorded(item, operation: Operation, outcome) -> bool:
    """After a write that succeeded: keep the copy's meeting as the provider made it (a cancel takes
    it away with the event) and tell the host when it changed. Returns whether the meeting is still
    being made (to read again)."""
    if outcome.error is not None:
        return False
    if operation.is_delete:
        new = None
    elif operation.conference is None:
        return False
    else:
        new = outcome.conference or operation.conference
        if new.status == "none":  # asked for, and the provider answered without one
            new = replace(new, status="failed", reason="The calendar made no meeting for this event.")
        new = _checked(new)
    if _store(item.record.pk, new):
        _report(item.source, item.obj, item.record.destination, new)
    return new is not None and new.status == "pending"


def _store(record_pk, new: Conference | None) -> bool:
    """Write `written["conference"]` (other keys untouched); whether it changed."""
    value = asdict(new) if new is not None else None
    with transaction.atomic():
        row = SyncRecord.objects.select_for_update().filter(pk=record_pk).only("written").first()
        if row is None:
            return False
        written = dict(row.written or {})
        if written.get("conference") == value:
            return False
        if value is None:
            written.pop("conference", None)
        else:
            written["conference"] = value
        SyncRecord.objects.filter(pk=record_pk).update(written=written)
    return True


def _report(source, obj, destination: str, new: Conference | None) -> None:
    if obj is None:
        return
    try:
        source.conference_changed(obj, destination, new or Conference())
    except Exception:  # noqa: BLE001 - the host's hook never undoes a write that happened
        logger.exception("conference_changed of %s:%s failed", source.key, obj.pk)


def pending(record_filter: dict) -> list[tuple[str, str, str]]:
    """(source, object id, destination) of the records matching `record_filter` whose meeting is
    still being made: to read again."""
    rows = SyncRecord.objects.filter(written__conference__status="pending", **record_filter)
    return list(rows.values_list("source", "object_id", "destination"))


def reread(source_key: str, object_id: str, destination: str, attempt: int = 0) -> float | None:
    """Read a pending meeting again; report it when it is ready or failed. Returns the seconds until
    the next read when it is still pending (None: nothing more to do). Gives up as failed after
    REREAD_DELAYS."""
    source = get_source(source_key)
    with locks.held(source_key, object_id, destination):
        record = SyncRecord.objects.filter(source=source_key, object_id=object_id, destination=destination).first()
        made = ((record.written or {}).get("conference") or {}) if record else {}
        if record is None or made.get("status") != "pending":
            return None
        token = Owner(record.owner_kind, record.owner_id).token()
        if token is None or not token.is_active:
            return None
        provider = get_provider(token.provider)
        operation = Operation(
            key=source.event_id(object_id, destination),
            object_ref=f"{source_key}:{object_id}",
            remote_id=record.remote_id or None,
            known_to_exist=True,
            conference=_conference(made),
        )
        calendar_id = token.calendar_id
        try:
            found = tokens.with_access(
                token,
                AccessLog.Operation.READ_EVENT,
                AccessLog.Reason.SCHEDULE,
                lambda access: provider.read_conference(access, calendar_id, operation),
            )
        except CalendarSyncError as exc:
            logger.info("pending meeting of %s:%s not read: %s", source_key, object_id, exc.code)
            found = None
        if found is None or found.status == "pending":
            if attempt + 1 < len(REREAD_DELAYS):
                return REREAD_DELAYS[attempt + 1]
            found = replace(
                operation.conference or Conference(), status="failed", reason="The meeting was never made ready."
            )
        found = _checked(found)
        changed = _store(record.pk, found)
    if changed:
        _report(source, source.get_queryset().filter(pk=object_id).first(), destination, found)
    return None


def stale_pending(now, stale_after: float, limit: int) -> list[tuple[str, str, str, bool]]:
    """Meetings still pending a while after their write (`stale_after` seconds), written within the
    last day, oldest first, at most `limit`: (source, object id, destination, last chance) for the
    sweeper to read again (a read whose task was lost; hosts without a broker). `last chance`: the
    reads again are over, so one still pending now fails. Found through the (state, updated_at)
    index: only the last day's synced records are looked at."""
    rows = (
        SyncRecord.objects.filter(
            state=SyncRecord.State.SYNCED,
            updated_at__gte=now - timedelta(days=1),
            updated_at__lt=now - timedelta(seconds=stale_after),
            written__conference__status="pending",
        )
        .order_by("updated_at")
        .values_list("source", "object_id", "destination", "updated_at")[:limit]
    )
    over = now - timedelta(seconds=sum(REREAD_DELAYS))
    return [(s, o, d, at < over) for s, o, d, at in rows]
