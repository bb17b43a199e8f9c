"""What a host may call, and all it imports of the app besides `calendar_sync.testing` and its URLs.
The host never queries the app's tables (`SyncRecord` stays private).

    from calendar_sync.api import Event, EventSource   # a source: what a model's calendar event is

    from calendar_sync import api
    api.sync_states("booking", bookings)   # {pk: {"member": {...}, "workspace": {...}}}
    api.resync("booking", bookings)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models

from . import flows, invitations, meetings, progress, tasks, tokens
from .conf import get_setting
from .models import CalendarToken, SyncRecord
from .owners import Owner, label, shared_kinds
from .providers import get_provider
from .reads import external_busy
from .serializers import ErrorSerializer, SyncStateSerializer
from .sources import EventSource, get_source
from .types import Conference, Event, Guest, SeriesInfo

__all__ = [
    "Conference",
    "ErrorSerializer",
    "Event",
    "EventSource",
    "Owner",
    "capabilities",
    "connection",
    "connections",
    "external_busy",
    "get_setting",
    "Guest",
    "offers_conference",
    "resync",
    "SeriesInfo",
    "shared_connections",
    "shared_kinds",
    "sync_again",
    "sync_states",
    "SyncStateSerializer",
]


def _state(record: SyncRecord) -> dict[str, Any]:
    return {
        "state": record.state,
        "event_id": record.remote_id or None,
        "last_error": record.last_error,
        "synced_at": record.synced_at,
        "attempts": record.attempts,
    }


def sync_states(source_key: str, objects: Iterable[models.Model]) -> dict[str, dict[str, dict[str, Any]]]:
    """{str(pk): {destination: state}} for these objects, in one query (for list serializers and admin)."""
    source = get_source(source_key)
    ids = [str(obj.pk) for obj in objects]
    states: dict[str, dict[str, dict[str, Any]]] = {i: {} for i in ids}
    for record in SyncRecord.objects.filter(source=source.key, object_id__in=ids):
        states[record.object_id][record.destination] = _state(record)
    return states


def resync(source_key: str, objects: Iterable[models.Model], destination: str | None = None) -> int:
    """Bring these objects' events up to date again in every destination (or only `destination`, e.g.
    "member": an event someone moved there goes back). Returns how many syncs were queued (enqueued
    when the caller's transaction commits)."""
    work = flows.resync_objects(source_key, objects, destination)
    tasks.schedule(work)
    return len(work)


def sync_again(source_key: str, obj: models.Model, destinations: Iterable[str]) -> int:
    """Bring these destinations of one object up to date again (not the others): e.g. the room's copy
    once the member's copy has its meeting link. Enqueued when the caller's transaction commits."""
    work = flows.sync_again(source_key, str(obj.pk), destinations)
    tasks.schedule(work)
    return len(work)


def capabilities(owner: Owner) -> dict[str, Any]:
    """What the owner's connected write calendar can do now: {"conference": ["google_meet"] |
    ["teams"] | [], "guests": bool}; not connected: nothing."""
    return meetings.capabilities(owner)


def offers_conference(owner: Owner, conference: str) -> bool:
    """Whether the owner's write calendar can make the meeting `conference` ("auto", "google_meet",
    "teams") now, from what is known (read once from the provider when unknown): if not, another copy
    may make it."""
    return meetings.offers(owner, conference)


def connections(owner: Owner) -> list[dict[str, Any]]:
    """Every connection of the owner, oldest first (never a token): for the connections API and status."""
    return [
        {
            "id": token.pk,
            "provider": token.provider,
            "account": token.account,
            "calendar_id": token.calendar_id,
            "write": token.write,
            "conflicts": token.conflicts,
            "status": token.status,
            "last_error": token.last_error,
            "connected_at": token.created_at,
        }
        for token in owner.connections().defer(*CalendarToken.SECRET_FIELDS)
    ]


def connection(owner: Owner) -> dict[str, Any]:
    """The owner's state (never a token): their write connection's, and every connection's, for status
    APIs and the host's pages."""
    token = (
        CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS)
        .select_related("connected_by")
        .filter(write=True, **owner.lookup())
        .first()
    )
    counts = {SyncRecord.State.PENDING: 0, SyncRecord.State.FAILED: 0}
    for state in SyncRecord.objects.filter(state__in=counts, **owner.lookup()).values_list("state", flat=True):
        counts[state] += 1
    paused_until = token.paused_until if token and token.writes_paused else None
    return {
        "connected": token is not None,
        "provider": token and token.provider,
        "calendar_id": token and token.calendar_id,
        "status": token.status if token else "disconnected",
        "last_error": tokens.pause_note(paused_until) if paused_until else token.last_error if token else "",
        "paused_until": paused_until,
        "scopes": token.scopes if token else [],
        "expires_at": token and token.expires_at,
        "connected_at": token and token.created_at,
        "connected_by": token.connected_by.get_username() if token and token.connected_by else None,
        "pending_syncs": counts[SyncRecord.State.PENDING],
        "failed_syncs": counts[SyncRecord.State.FAILED],
        "bulk": progress.of(token),
        "resend_invitations": resend_invitations(owner, token),
        "connections": connections(owner),
    }


def resend_invitations(owner: Owner, token: CalendarToken | None) -> int:
    """How many events with guests a change of calendar would send again (a cancellation and a new
    invitation each): those in the write calendar when its provider cannot move events (Graph);
    0 where it can (Google's events.move tells nobody) or when nothing is connected."""
    if token is None or get_provider(token.provider).can_move:
        return 0
    return SyncRecord.objects.filter(
        remote_may_exist=True, written__has_key=invitations.GUEST_DIGEST, **owner.lookup()
    ).count()


def shared_connections(kind: str | None = None) -> list[dict[str, Any]]:
    """Every shared connection (of one kind, or all), with its owner's label: for staff pages and the API."""
    tokens = CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS).exclude(owner_kind="user")
    if kind:
        tokens = tokens.filter(owner_kind=kind)
    rows = []
    for token in tokens.order_by("owner_kind", "owner_id"):
        owner = Owner(token.owner_kind, token.owner_id)
        rows.append({"owner_kind": owner.kind, "owner_id": owner.id, "owner_label": label(owner), **connection(owner)})
    return rows
