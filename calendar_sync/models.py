import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .fields import SecretField

MEMBER = "user"  # the owner kind of a member's own connection; shared kinds come from SHARED_OWNERS
#: Connections the app reads in the background: shared ones, and members' write connections (what
#: the member changes in our events comes back).
WATCHED = ~Q(owner_kind=MEMBER) | Q(write=True)


class CalendarToken(models.Model):
    """A connection to a calendar provider, owned by a member or by a host object (a room).

    A member's connections have `user` set: a member may connect several accounts; bookings go to
    the one marked `write` (at most one per member, a partial unique constraint), and every one
    marked `conflicts` counts for busy times. A shared connection belongs to its object
    (`owner_kind`, `owner_id`; one per object, always the write one), records who connected it,
    and outlives that person. Tokens are encrypted at rest.
    """

    SECRET_FIELDS = ("access_token", "refresh_token")

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        NEEDS_REAUTH = "needs_reauth", "Needs reauthorization"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="calendar_tokens"
    )
    owner_kind = models.CharField(max_length=32, default=MEMBER)
    owner_id = models.CharField(max_length=64)
    connected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    provider = models.CharField(max_length=32)  # a key of calendar_sync.providers.PROVIDERS
    access_token = SecretField()
    refresh_token = SecretField()
    expires_at = models.DateTimeField(null=True, blank=True)
    calendar_id = models.CharField(max_length=1024, default="primary")
    write = models.BooleanField(default=True, help_text="Bookings go to this connection's calendar.")
    conflicts = models.BooleanField(default=True, help_text="Its busy times count for conflicts.")
    account = models.CharField(max_length=320, blank=True, help_text="The account's e-mail or user name, as shown.")
    scopes = models.JSONField(default=list, blank=True)
    # What the write calendar can do, as its provider last said (read on connect and calendar change):
    # {"conference": ["google_meet"] | ["teams"] | []}; {} when never read.
    capabilities = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.ACTIVE)
    last_error = models.TextField(blank=True)
    # Writes wait until then: the provider's usage limit for this account (reads go on). Past = not paused.
    paused_until = models.DateTimeField(null=True, blank=True)
    # Incremental reads of a watched calendar (WATCHED): the provider's cursor (syncToken / deltaLink) and when.
    pull_cursor = models.TextField(blank=True)
    pull_until = models.DateTimeField(null=True, blank=True)  # how far ahead the cursor's round reads
    pulled_at = models.DateTimeField(null=True, blank=True)
    # Push notifications (Google channel / Graph subscription): id, provider resource id, expiry.
    push_channel = models.CharField(max_length=255, blank=True)
    push_resource = models.CharField(max_length=255, blank=True)
    push_expires_at = models.DateTimeField(null=True, blank=True)
    # The bulk job under way (backfill, calendar move, resync), for status pages ("" when none: `progress`).
    bulk_kind = models.CharField(max_length=16, blank=True)
    bulk_done = models.PositiveIntegerField(default=0)
    bulk_total = models.PositiveIntegerField(default=0)
    bulk_started_at = models.DateTimeField(null=True, blank=True)
    bulk_updated_at = models.DateTimeField(null=True, blank=True)  # its last step: a killed worker's job goes stale
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "calendar connection"
        constraints = [
            # One write connection per owner; a shared (room) owner has only that one.
            models.UniqueConstraint(
                fields=["owner_kind", "owner_id"], condition=models.Q(write=True), name="calendar_sync_token_one_write"
            ),
            models.UniqueConstraint(
                fields=["owner_kind", "owner_id"],
                condition=~models.Q(owner_kind=MEMBER),
                name="calendar_sync_token_shared_unique",
            ),
        ]
        # What the periodic jobs look for, so a tick with nothing due reads no table: idle connections
        # (health), watched ones (shared, and members' write connections) whose channel expires
        # (renewal) or not pulled lately (scheduled pull).
        indexes = [
            models.Index(fields=["status", "updated_at"], name="calendar_sync_token_idle_idx"),
            models.Index(fields=["push_expires_at"], condition=WATCHED, name="calendar_sync_token_push_idx"),
            models.Index(fields=["pulled_at"], condition=WATCHED, name="calendar_sync_token_pull_idx"),
        ]

    def __str__(self):
        return f"{self.provider} calendar of {self.owner_kind}:{self.owner_id}"

    def __repr__(self):
        # Never let a token reach a log line or a traceback through repr().
        return f"<CalendarToken {self.pk} owner={self.owner_kind}:{self.owner_id} provider={self.provider} status={self.status}>"

    @property
    def is_shared(self):
        return self.owner_kind != MEMBER

    def save(self, *args, **kwargs):
        if self.owner_kind == MEMBER and not self.owner_id and self.user_id:
            self.owner_id = str(self.user_id)  # a member's connection is owned by that member
        super().save(*args, **kwargs)

    @property
    def is_active(self):
        return self.status == self.Status.ACTIVE

    @property
    def writes_paused(self):
        """Whether writes wait for the provider's usage limit to reset (until `paused_until`)."""
        return self.paused_until is not None and self.paused_until > timezone.now()


class OAuthState(models.Model):
    """A pending authorization: single use (deleted when consumed), keeps the PKCE verifier server-side."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")  # who started it
    owner_kind = models.CharField(max_length=32, default=MEMBER)  # whose connection it will be
    owner_id = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=32)
    code_verifier = SecretField()
    # sha256 of the flow cookie set in the browser that started it ("" when none): the callback must show it.
    browser_hash = models.CharField(max_length=64, blank=True, default="")
    add = models.BooleanField(default=False)  # a member's additional connection, not a replacement of the write one
    created_at = models.DateTimeField(auto_now_add=True)

    def __repr__(self):
        return f"<OAuthState {self.pk} user={self.user_id}>"


class SyncRecord(models.Model):
    """The durable "this object's event in this destination must match it" record (the outbox).

    One per (object, destination): a booking has one for its member's calendar and one for its
    room's. Written in the same transaction as the watched object. `version` is bumped on each
    change that matters; a sync that read version N only marks the record synced if it is
    still N, so late or reordered work can never overwrite newer state.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        SYNCED = "synced", "Synced"
        FAILED = "failed", "Failed"
        NOT_CONNECTED = "not_connected", "Not connected"

    source = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    destination = models.CharField(max_length=32, default="member")  # the role: a key of EventSource.destinations()
    owner_kind = models.CharField(max_length=32, default=MEMBER)  # whose calendar: the connection's owner
    owner_id = models.CharField(max_length=64)
    version = models.PositiveBigIntegerField(default=1)
    synced_version = models.PositiveBigIntegerField(default=0)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # Set before the first create is attempted, cleared after a delete: lets a record whose
    # object never needed an event finish without calling the provider.
    remote_may_exist = models.BooleanField(default=False)
    # The provider's id of the event (Google: our deterministic id; Graph: the id it chose).
    remote_id = models.CharField(max_length=1024, blank=True, default="")
    # What this app last wrote there, compared before the next write: digests of the event as written
    # (all of it, and what guests see), the provider's version of it (ETag / changeKey), its conference.
    written = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "object_id", "destination"], name="calendar_sync_record_unique")
        ]
        indexes = [
            models.Index(fields=["state", "updated_at"]),
            models.Index(fields=["owner_kind", "owner_id", "state"], name="calendar_sync_owner_state_idx"),
            models.Index(fields=["state", "retry_at"], name="calendar_sync_state_retry_idx"),  # the sweeper's failed
        ]

    def __str__(self):
        return f"{self.source}:{self.object_id} → {self.destination} ({self.state})"


class CalendarFeed(models.Model):
    """A member's private iCal subscription URL. The secret is stored encrypted; lookups use its hash."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calendar_feed")
    secret = SecretField()
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now=True)
    # What the feed showed when last rendered, and since when: its ETag and Last-Modified.
    content_hash = models.CharField(max_length=64, blank=True)
    content_changed_at = models.DateTimeField(null=True, blank=True)

    def __repr__(self):
        return f"<CalendarFeed user={self.user_id}>"

    @staticmethod
    def hash(secret):
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def issue(cls, user):
        """Create the member's feed, or replace its secret (the old URL stops working at once)."""
        secret = secrets.token_urlsafe(32)
        feed, _ = cls.objects.update_or_create(user=user, defaults={"secret": secret, "secret_hash": cls.hash(secret)})
        return feed

    @classmethod
    def get_or_issue(cls, user):
        """(feed, created): the member's feed, created if none. Racing requests all get the one
        that won (the user is unique; get_or_create reads it back after an IntegrityError)."""
        secret = secrets.token_urlsafe(32)
        return cls.objects.get_or_create(user=user, defaults={"secret": secret, "secret_hash": cls.hash(secret)})


class AccessLog(models.Model):
    """One row per use of a stored token: who, provider, operation, why, outcome. Never a token."""

    class Operation(models.TextChoices):
        REFRESH = "refresh", "Refresh access token"
        REVOKE = "revoke", "Revoke grant"
        LIST_CALENDARS = "list_calendars", "List calendars"
        CREATE_EVENT = "create_event", "Create event"
        UPDATE_EVENT = "update_event", "Update event"
        DELETE_EVENT = "delete_event", "Delete event"
        BATCH = "batch", "Batch of event writes"
        READ_BUSY = "read_busy", "Read busy times"
        PULL = "pull_changes", "Read calendar changes"
        TEST = "test_event", "Test event"
        READ_EVENT = "read_event", "Read event"

    class Reason(models.TextChoices):
        CONFIRMED = "confirmed", "Booking confirmed"
        RESCHEDULED = "rescheduled", "Booking changed"
        CANCELLED = "cancelled", "Booking cancelled"
        BACKFILL = "backfill", "Backfill after connecting"
        RESYNC = "resync", "Resync"
        CALENDAR_CHANGE = "calendar_change", "Calendar change"
        MEMBER_REQUEST = "member_request", "Member request"
        STAFF_REQUEST = "staff_request", "Staff request"
        SCHEDULE = "schedule", "Scheduled read"
        PUSH = "push_notification", "Push notification"
        HEALTH = "health_check", "Health check"
        # What someone changed in the member's own calendar, and what the host did about it.
        REMOTE_DELETED = "remote_deleted", "Event deleted in the calendar"
        REMOTE_MOVED = "remote_moved", "Event moved in the calendar"
        RESPONSES = "responses", "Guests answered"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    owner = models.CharField(max_length=100, blank=True)  # "user:5" or "workspace:3": whose connection
    provider = models.CharField(max_length=32)
    operation = models.CharField(max_length=32, choices=Operation.choices)
    reason = models.CharField(max_length=32, choices=Reason.choices)
    outcome = models.CharField(max_length=64, default="ok")  # "ok" or the classified error code
    object_ref = models.CharField(max_length=140, blank=True)
    count = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["user", "-created_at"], name="calendar_sy_user_id_8a1f2c_idx"),
            models.Index(fields=["owner", "created_at"], name="calendar_sync_log_owner_idx"),  # the health check
        ]
        ordering = ["-created_at", "-id"]
        verbose_name = "calendar access log entry"
        verbose_name_plural = "calendar access log"

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.provider} {self.operation} ({self.reason}): {self.outcome}"


class BusyBlock(models.Model):
    """Time taken in a shared calendar by an event this app did not write (a room booked outside it).

    Times and the provider's id only; a title only when the operator allows it.
    """

    owner_kind = models.CharField(max_length=32)
    owner_id = models.CharField(max_length=64)
    remote_id = models.CharField(max_length=1024)
    #: The recurring event this is an occurrence of ("" when none): ours once we know that event's id.
    series_id = models.CharField(max_length=1024, blank=True, default="")
    start = models.DateTimeField()
    end = models.DateTimeField()
    summary = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner_kind", "owner_id", "remote_id"], name="calendar_sync_busy_unique")
        ]
        indexes = [models.Index(fields=["owner_kind", "owner_id", "start", "end"], name="calendar_sync_busy_span_idx")]

    def __str__(self):
        return f"{self.owner_kind}:{self.owner_id} busy {self.start:%Y-%m-%d %H:%M}–{self.end:%H:%M}"


class SeriesRecord(models.Model):
    """The recurring event of one series in one destination (design decision 22): one per (source,
    series key, destination). No outbox of its own: the syncs of the series' occurrences bring it up
    to date, one at a time (a lock per series and destination). `written` holds what we last wrote
    there (a digest of the event and its rule) and `generation`, renewed whenever the event is made
    anew, so exceptions written to an older one are never taken as still there."""

    source = models.CharField(max_length=64)
    series_key = models.CharField(max_length=64)
    destination = models.CharField(max_length=32, default="member")
    owner_kind = models.CharField(max_length=32, default=MEMBER)
    owner_id = models.CharField(max_length=64)
    # The connection and calendar the event was written to: another one means it is not there.
    connection = models.CharField(max_length=64, blank=True)
    calendar_id = models.CharField(max_length=1024, blank=True)
    remote_may_exist = models.BooleanField(default=False)
    remote_id = models.CharField(max_length=1024, blank=True, default="")
    written = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "series_key", "destination"], name="calendar_sync_series_record_unique"
            )
        ]

    def __str__(self):
        return f"{self.source}:series:{self.series_key} → {self.destination}"
