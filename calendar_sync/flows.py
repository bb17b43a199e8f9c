"""What a person does to a connection: one plain function each (allauth's `internal/flows` is the model).

store and connect (connect_caldav and connect_ics for the providers without OAuth), disconnect, make_write and
set_conflicts, change_calendar, resync (and resync_records / resync_objects), test.
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

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from . import channels, fetch, reads, remote, sync, tokens
from .exceptions import AuthorizationLost, CalendarSyncError, NotConnected, PermanentError
from .models import AccessLog, CalendarToken, SyncRecord
from .owners import Owner
from .providers import get_provider, ics
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
    """The owner's write connection (where their events go) without its secrets loaded (they are
    read only where used, so a connection whose secrets cannot be decrypted can still be
    disconnected). NotConnected if none."""
    token = CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS).filter(write=True, **owner.lookup()).first()
    if token is None:
        raise NotConnected("No calendar is connected.")
    return token


def owned(owner: Owner, pk) -> CalendarToken:
    """One of the owner's connections by id (secrets not loaded); NotConnected when it is not theirs."""
    try:
        token = owner.connections().defer(*CalendarToken.SECRET_FIELDS).filter(pk=pk).first()
    except (ValueError, ValidationError):
        token = None
    if token is None:
        raise NotConnected("No such calendar connection.")
    return token


def store(owner: Owner, user, provider_name: str, grant: TokenSet, add: bool = False) -> CalendarToken:
    """Save a new grant as one of `owner`'s connections (the end of the OAuth flow, before `connect`).

    Without `add` it replaces the write connection: its push channel belongs to the old grant and
    is stopped; a switch of provider first takes our events out of the old calendar, as a calendar
    change does, and starts again on the new account's primary calendar. With `add` (members only)
    it is another connection, counting for conflicts, and the write one only when the member has
    none. The same account connected again stays one connection (see `_merge_same_account`)."""
    fields = {
        "user": user if owner.is_member else None,
        "connected_by": user,
        "provider": provider_name,
        "access_token": grant.access_token,
        "refresh_token": grant.refresh_token,
        "expires_at": grant.expires_at,
        "scopes": sorted(grant.scopes),
        "status": CalendarToken.Status.ACTIVE,
        "last_error": "",
        "capabilities": {},  # what the calendar can make is read again when first needed
    }
    existing = None if add and owner.is_member else CalendarToken.objects.filter(write=True, **owner.lookup()).first()
    if existing is not None:
        if existing.push_channel:
            channels.stop_watch(existing)  # a reconnect or a switch: the old channel belongs to the old grant
        if existing.provider != provider_name:
            # Switching provider: take our events out of the old calendar first, as a calendar change does.
            sync.remove_events(existing, existing.calendar_id)
            fields.update(calendar_id="primary", account="")
        for name, value in fields.items():
            setattr(existing, name, value)
        existing.save()
        token = existing
    else:
        token = _create(owner, fields)
    if owner.is_member and owner.connections().count() > 1:
        # Several: name each (this one, and an earlier one never named) to tell them apart, one per account.
        for other in owner.connections().filter(account="", status=CalendarToken.Status.ACTIVE).exclude(pk=token.pk):
            _describe(other)
        _describe(token)
    return token


def _create(owner: Owner, fields: dict) -> CalendarToken:
    """A new connection: the write one when the owner has none (a racing one that won keeps it)."""
    writable = get_provider(fields["provider"]).writable
    write = writable and not CalendarToken.objects.filter(write=True, **owner.lookup()).exists()
    try:
        with transaction.atomic():
            return CalendarToken.objects.create(write=write, **owner.lookup(), **fields)
    except IntegrityError:  # another connection became the write one meanwhile (one write per owner)
        return CalendarToken.objects.create(write=False, **owner.lookup(), **fields)


def _describe(token: CalendarToken, reason: str = Reason.MEMBER_REQUEST) -> None:  # type: ignore[assignment]  # TextChoices member: a str at runtime (no django-stubs)
    """Learn the account's name from its calendar list (Google's primary calendar id is the address;
    Graph names the default calendar's owner), best effort: a failure leaves it blank. A member's
    only connection learns it at its first calendar listing instead (`tokens.calendars`), which
    spares connecting a call."""
    try:
        calendars = tokens.calendars(token, reason)
    except CalendarSyncError as exc:
        logger.info("calendar account of %s:%s not read: %s", token.owner_kind, token.owner_id, exc.code)
        return
    account = next((c.owner for c in calendars if c.primary and c.owner), "")[:320]
    if account:
        _merge_same_account(token, account)


def _merge_same_account(token: CalendarToken, account: str) -> None:
    """Record the account; an older connection of the same owner to the same account is the same
    one connected again: it goes (not revoked: the grant is the same account's), and what the member
    chose for it (write, conflicts, calendar) stays unless this one is the write connection already."""
    owner = Owner(token.owner_kind, token.owner_id)
    with transaction.atomic():
        rows = {t.pk: t for t in owner.connections().select_for_update().defer(*CalendarToken.SECRET_FIELDS)}
        same = [t for t in rows.values() if t.pk != token.pk and t.provider == token.provider and t.account == account]
        changes: dict = {"account": account}
        for old in same:
            if not token.write:
                changes.update(write=old.write, conflicts=old.conflicts, calendar_id=old.calendar_id)
            old.delete()
        CalendarToken.objects.filter(pk=token.pk).update(**changes, updated_at=timezone.now())
    for name, value in changes.items():
        setattr(token, name, value)


def connect(token: CalendarToken) -> list[Task]:
    """A connection was just stored (the OAuth callback): push what is booked into it when it is the
    write connection (an additional one is only read) and, for a shared calendar, read what is
    already in it (from scratch: a reconnect may be another account) and watch it for changes."""
    owner = Owner(token.owner_kind, token.owner_id)
    if not token.write:
        return []  # an additional calendar: read for conflicts, never written to
    work = [Task("backfill", (owner.kind, owner.id))]
    if token.is_shared:
        reads.forget(owner)
        work += [Task("pull", (owner.kind, owner.id)), Task("renew_push")]
    elif remote.watched(token):
        work.append(Task("renew_push"))  # what the member changes in our events comes back sooner
    return work


def connect_caldav(
    owner: Owner, user, server_url: str, username: str, password: str
) -> tuple[CalendarToken, list[Task]]:
    """Connect a CalDAV account (Apple iCloud, Fastmail, Nextcloud…) with a user name and password.

    The server is checked first by finding the member's calendars through the safe fetcher, so a
    refused address (`fetch.RefusedAddress`), a wrong password (AuthorizationLost) or a server that
    is not CalDAV (another classified error) stores nothing. The password is kept encrypted as the
    connection's credential. A reconnect keeps the calendar chosen before while it is still there;
    otherwise the first writable event calendar is chosen. Then as `connect`."""
    credential, calendars = get_provider("caldav").connect(server_url, username, password)
    before = CalendarToken.objects.filter(provider="caldav", **owner.lookup()).values_list("calendar_id", flat=True)
    kept = [c.id for c in calendars if c.id in set(before)]
    calendar_id = kept[0] if kept else calendars[0].id
    token = store(owner, user, "caldav", TokenSet(credential, credential, None), add=owner.is_member)
    CalendarToken.objects.filter(pk=token.pk).update(calendar_id=calendar_id, updated_at=timezone.now())
    token.calendar_id = calendar_id
    _merge_same_account(token, username[:320])
    return token, connect(token)


def connect_ics(owner: Owner, user, url: str) -> tuple[CalendarToken, list[Task]]:
    """Connect an ICS link (read-only: it only counts for conflicts). The link is fetched and parsed
    once first (the same errors as `connect_caldav`); it is the secret, stored encrypted. Nothing
    is written to it, so there is nothing to backfill; a shared one is pulled."""
    url = fetch.normalize(url)
    provider = get_provider("ics")
    credential = ics.credential(url)
    provider.list_calendars(credential)
    token = store(owner, user, "ics", TokenSet(credential, credential, None), add=owner.is_member)
    # Named by its host, never merged by that name: two secret links of one service look alike redacted.
    CalendarToken.objects.filter(pk=token.pk).update(account=ics.redact(url)[:320])
    token.account = ics.redact(url)[:320]
    if token.is_shared:
        reads.forget(owner)
        return token, [Task("pull", (owner.kind, owner.id))]
    return token, []


def disconnect(owner: Owner, reason: str = Reason.MEMBER_REQUEST, pk=None) -> Disconnected:  # type: ignore[assignment]  # TextChoices member: a str at runtime (no django-stubs)
    """Stop the push channel, revoke the grant (best effort) and delete the write connection (or
    the connection `pk`). When it was the write connection, forget its busy blocks and mark the
    unfinished work not connected: no other connection becomes the write one on its own (the
    member picks one; nothing lands in a calendar they did not choose). Works even when the stored
    secrets cannot be decrypted: then nothing is revoked and the reason says so."""
    token = connection(owner) if pk is None else owned(owner, pk)
    channels.stop_watch(token)  # needs the grant: before it goes (a channel it cannot stop expires on its own)
    revoked, why = tokens.revoke(token)
    if token.write:
        reads.forget(owner)
        SyncRecord.objects.filter(**owner.lookup()).exclude(state=SyncRecord.State.SYNCED).update(
            state=SyncRecord.State.NOT_CONNECTED, updated_at=timezone.now()
        )
    logger.info("calendar connection of %s disconnected (%s)", owner, reason)
    return Disconnected(revoked, why)


def make_write(owner: Owner, pk) -> list[Task]:
    """Send the member's events to connection `pk` from now on: it becomes the write connection and
    the move (our events out of the old write connection's calendar, into this one's) is returned.
    Under a lock on the member's connections, so two changes at once leave exactly one write one.
    NotConnected when it is not theirs; AuthorizationLost when it needs reauthorization."""
    with transaction.atomic():
        rows = list(owner.connections().select_for_update().defer(*CalendarToken.SECRET_FIELDS))
        token = next((t for t in rows if str(t.pk) == str(pk)), None)
        if token is None:
            raise NotConnected("No such calendar connection.")
        if token.write:
            return []
        if not token.is_active:
            raise AuthorizationLost("The calendar connection needs reauthorization.", code="needs_reauth")
        if not get_provider(token.provider).writable:
            raise PermanentError("This calendar is read-only: it counts for conflicts only.", code="read_only")
        old = next((t for t in rows if t.write), None)
        now = timezone.now()
        if old is not None:
            CalendarToken.objects.filter(pk=old.pk).update(
                write=False, pull_cursor="", pull_until=None, pulled_at=None, updated_at=now
            )
        CalendarToken.objects.filter(pk=token.pk).update(write=True, updated_at=now)
    logger.info("bookings of %s go to another connection now", owner)
    if old is not None and old.push_channel:
        channels.stop_watch(old)  # only the write connection is watched
    if old is None:
        return [Task("backfill", (owner.kind, owner.id)), Task("renew_push")]
    return [Task("move_connection", (owner.kind, owner.id, str(old.pk), old.calendar_id)), Task("renew_push")]


def set_conflicts(owner: Owner, pk, conflicts: bool) -> CalendarToken:
    """Whether connection `pk`'s busy times count for conflicts. NotConnected when it is not theirs."""
    token = owned(owner, pk)
    CalendarToken.objects.filter(pk=token.pk).update(conflicts=conflicts, updated_at=timezone.now())
    token.conflicts = conflicts
    return token


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
    # What the old calendar could make (a video meeting) says nothing of the new one: read again when needed.
    CalendarToken.objects.filter(pk=token.pk).update(
        calendar_id=calendar_id, capabilities={}, updated_at=timezone.now()
    )
    token.calendar_id, token.capabilities = calendar_id, {}
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


def resync_objects(source_key: str, objects: Iterable[models.Model], destination: str | None = None) -> list[Task]:
    """Resync these objects of one source in every destination (or only `destination`), creating
    records for any never synced."""
    source = get_source(source_key)
    items = list(objects)
    SyncRecord.objects.bulk_create(
        [
            SyncRecord(source=source_key, object_id=str(o.pk), destination=role, **owner.lookup())
            for o in items
            for role, owner in destinations(source, o).items()
            if destination in (None, role)
        ],
        ignore_conflicts=True,
    )
    records = SyncRecord.objects.filter(source=source_key, object_id__in=[str(o.pk) for o in items])
    return resync_records(records if destination is None else records.filter(destination=destination))


def sync_again(source_key: str, object_id: str, roles: Iterable[str]) -> list[Task]:
    """Bring some destinations of one object up to date again (a new version of their records), as
    interactive work: e.g. a room's copy that carries a meeting link made in the member's copy."""
    records = SyncRecord.objects.filter(source=source_key, object_id=str(object_id), destination__in=list(roles))
    rows = list(records.values_list("pk", "destination"))
    SyncRecord.objects.filter(pk__in=[pk for pk, _ in rows]).update(
        version=F("version") + 1, state=SyncRecord.State.PENDING, attempts=0, retry_at=None, updated_at=timezone.now()
    )
    return [Task("sync", (source_key, str(object_id), role, "")) for _, role in rows]


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
