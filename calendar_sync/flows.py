"""What a person does to a connection: one plain function each (allauth's `internal/flows` is the model).

store and connect, disconnect, change_calendar, resync (and resync_records / resync_objects), test.
Views, admin actions, management commands and the host API call these and repeat none of
their steps: copies drift (an admin disconnect that left busy blocks and a push channel behind;
a calendar change that read the old calendar after setting the new one, and moved nothing).

No Celery here: a flow returns the follow-up work as `Task`s, and the entry point hands them
to `tasks.schedule`, which enqueues them once the transaction commits.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from django.db import models
from django.db.models import F, QuerySet
from django.utils import timezone

from . import channels, reads, sync, tokens
from .exceptions import NotConnected
from .models import AccessLog, CalendarToken, SyncRecord
from .owners import Owner
from .sources import get_source
from .sync import destinations
from .types import Calendar, Event, Operation, Task, TokenSet

logger = logging.getLogger(__name__)
Reason = AccessLog.Reason


@dataclass(frozen=True)
class Disconnected:
    """Deleted here; `revoked` says whether the provider confirmed the revoke, `reason` why not."""

    revoked: bool
    reason: str = ""


class UnknownCalendar(ValueError):
    """The calendar asked for is not one of the connection's writable calendars."""


def connection(owner: Owner) -> CalendarToken:
    """The owner's connection without its secrets loaded (they are read only where used, so a
    connection whose secrets cannot be decrypted can still be disconnected). NotConnected if none."""
    token = CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS).filter(**owner.lookup()).first()
    if token is None:
        raise NotConnected("No calendar is connected.")
    return token


def store(owner: Owner, user, provider_name: str, grant: TokenSet) -> CalendarToken:
    """Save a new grant as `owner`'s connection (the end of the OAuth flow, before `connect`).

    A reconnect or a switch replaces a connection: its push channel belongs to the old grant and is
    stopped; a switch of provider first takes our events out of the old calendar, as a calendar
    change does, and starts again on the new account's primary calendar."""
    existing = CalendarToken.objects.filter(**owner.lookup()).first()
    if existing is not None and existing.push_channel:
        channels.stop_watch(existing)  # a reconnect or a switch: the old channel belongs to the old grant
    previous = existing if existing is not None and existing.provider != provider_name else None
    if previous is not None:
        # Switching provider: take our events out of the old calendar first, as a calendar change does.
        sync.remove_events(previous, previous.calendar_id)
    token, _ = CalendarToken.objects.update_or_create(
        **owner.lookup(),
        defaults={
            "user": user if owner.is_member else None,
            "connected_by": user,
            "provider": provider_name,
            "access_token": grant.access_token,
            "refresh_token": grant.refresh_token,
            "expires_at": grant.expires_at,
            "scopes": sorted(grant.scopes),
            "status": CalendarToken.Status.ACTIVE,
            "last_error": "",
            **({"calendar_id": "primary"} if previous is not None else {}),
        },
    )
    return token


def connect(token: CalendarToken) -> list[Task]:
    """A connection was just stored (the OAuth callback): push what is booked into it and, for a
    shared calendar, read what is already in it (from scratch: a reconnect may be another
    account) and watch it for changes."""
    owner = Owner(token.owner_kind, token.owner_id)
    work = [Task("backfill", (owner.kind, owner.id))]
    if token.is_shared:
        reads.forget(owner)
        work += [Task("pull", (owner.kind, owner.id)), Task("renew_push")]
    return work


def disconnect(owner: Owner, reason: str = Reason.MEMBER_REQUEST) -> Disconnected:  # type: ignore[assignment]  # TextChoices member: a str at runtime (no django-stubs)
    """Stop the push channel, revoke the grant (best effort), delete the connection, forget its
    busy blocks and mark its unfinished work not connected. Works even when the stored secrets
    cannot be decrypted: then nothing is revoked and the reason says so."""
    token = connection(owner)
    channels.stop_watch(token)  # needs the grant: before it goes (a channel it cannot stop expires on its own)
    revoked, why = tokens.revoke(token)
    reads.forget(owner)
    SyncRecord.objects.filter(**owner.lookup()).exclude(state=SyncRecord.State.SYNCED).update(
        state=SyncRecord.State.NOT_CONNECTED, updated_at=timezone.now()
    )
    logger.info("calendar connection of %s disconnected (%s)", owner, reason)
    return Disconnected(revoked, why)


def _same_calendar(current: str, wanted: str, calendars: Iterable[Calendar]) -> bool:
    """ "primary" and the primary calendar's own id name the same calendar."""
    primary = next((c.id for c in calendars if c.primary), None)
    return current == wanted or {current, wanted} == {"primary", primary}


def change_calendar(owner: Owner, calendar_id: str, reason: str = Reason.MEMBER_REQUEST) -> list[Task]:  # type: ignore[assignment]  # TextChoices member: a str at runtime (no django-stubs)
    """Send the owner's events to another of their writable calendars.

    The old calendar is read before the new one is stored, so the move knows where the events
    are; its push channel is stopped and a new one made on the new calendar; what was read from
    the old calendar is forgotten. The move (remove from the old, backfill the new) is returned,
    with a fresh read of a shared calendar. Raises UnknownCalendar, NotConnected, or the
    provider's classified error from listing the calendars.
    """
    token = connection(owner)
    calendars = tokens.calendars(token, reason)
    if calendar_id != "primary" and calendar_id not in {c.id for c in calendars}:
        raise UnknownCalendar(calendar_id)
    old = token.calendar_id
    if _same_calendar(old, calendar_id, calendars):
        return []
    channels.stop_watch(token)  # it watches the old calendar
    CalendarToken.objects.filter(pk=token.pk).update(calendar_id=calendar_id, updated_at=timezone.now())
    token.calendar_id = calendar_id
    reads.forget(owner)  # busy blocks and the read cursor belong to the old calendar
    channels.ensure_watch(token)  # only for shared connections with push on
    logger.info("calendar of %s changed (%s)", owner, reason)
    work = [Task("move_calendar", (owner.kind, owner.id, old))]
    if token.is_shared:
        work.append(Task("pull", (owner.kind, owner.id)))
    return work


def resync_records(records: QuerySet[SyncRecord]) -> list[Task]:
    """Mark these SyncRecords pending again (a new version) and return one sync each."""
    rows = list(records.values_list("pk", "source", "object_id", "destination"))
    SyncRecord.objects.filter(pk__in=[r[0] for r in rows]).update(
        version=F("version") + 1, state=SyncRecord.State.PENDING, attempts=0, retry_at=None, updated_at=timezone.now()
    )
    reason = Reason.RESYNC.value  # type: ignore[attr-defined]  # TextChoices member: a str at runtime (no django-stubs)
    return [Task("sync", (source, object_id, destination, reason)) for _, source, object_id, destination in rows]


def resync_objects(source_key: str, objects: Iterable[models.Model]) -> list[Task]:
    """Resync these objects of one source in every destination, creating records for any never synced."""
    source = get_source(source_key)
    items = list(objects)
    SyncRecord.objects.bulk_create(
        [
            SyncRecord(source=source_key, object_id=str(o.pk), destination=role, **owner.lookup())
            for o in items
            for role, owner in destinations(source, o).items()
        ],
        ignore_conflicts=True,
    )
    return resync_records(SyncRecord.objects.filter(source=source_key, object_id__in=[str(o.pk) for o in items]))


def resync(owner: Owner, failed_only: bool = False) -> list[Task]:
    """Push an owner's calendar again: its failed syncs, and unless `failed_only` every upcoming
    object and all unsynced work (the backfill that runs on connect). NotConnected if none."""
    connection(owner)
    work = resync_records(SyncRecord.objects.filter(state=SyncRecord.State.FAILED, **owner.lookup()))
    if not failed_only:
        work.append(Task("backfill", (owner.kind, owner.id, "resync")))
    return work


def test(owner: Owner, reason: str = Reason.MEMBER_REQUEST) -> dict:  # type: ignore[assignment]  # TextChoices member: a str at runtime (no django-stubs)
    """Write a short test event to the owner's calendar and remove it: {"ok": True}, or the classified error."""
    token = reads.active_token(owner)
    start = timezone.now().replace(second=0, microsecond=0) + timedelta(days=1)
    key = base64.b32hexencode(secrets.token_bytes(20)).decode().lower()
    event = Event(
        summary="ManageHub test event",
        start=start,
        end=start + timedelta(minutes=5),
        description="A connection test; it is removed at once.",
    )
    created = sync._run(token, [Operation(key=key, event=event, object_ref="test")], reason)[0]
    if created.error is not None:
        raise created.error
    removed = sync._run(
        token, [Operation(key=key, object_ref="test", remote_id=created.remote_id or key, known_to_exist=True)], reason
    )[0]
    if removed.error is not None:
        raise removed.error
    return {"ok": True}
