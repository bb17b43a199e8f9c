from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import AccessLog, CalendarToken
from .progress import KINDS
from .providers import configured_providers
from .providers.caldav import PRESETS


class ErrorSerializer(serializers.Serializer):
    """Every error answer: a machine-readable `code` and a sentence for people (plus the fields at fault on 400)."""

    code = serializers.CharField()
    detail = serializers.CharField()


class ProviderSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()


class AuthorizationURLSerializer(serializers.Serializer):
    authorization_url = serializers.URLField()


class CompleteSerializer(serializers.Serializer):
    code = serializers.CharField(max_length=4096, help_text="The `code` the provider sent back.")
    state = serializers.CharField(max_length=4096, help_text="The `state` sent back with it.")


class ConnectionSerializer(serializers.Serializer):
    """One of a member's calendar connections (never a secret)."""

    id = serializers.UUIDField()
    provider = serializers.CharField()
    account = serializers.CharField(
        allow_blank=True, help_text="The account's e-mail or user name; blank if not known yet."
    )
    calendar_id = serializers.CharField()
    write = serializers.BooleanField(help_text="Bookings go to this connection's calendar (one connection at most).")
    conflicts = serializers.BooleanField(help_text="Its busy times count for conflicts.")
    status = serializers.CharField(help_text="`active`, or `needs_reauth` (reconnect it).")
    last_error = serializers.CharField(allow_blank=True)
    connected_at = serializers.DateTimeField()


class ConnectionChangeSerializer(serializers.Serializer):
    """PATCH a connection: make it the write one (bookings move to it), or whether it counts for conflicts."""

    write = serializers.BooleanField(
        required=False,
        help_text="`true`: bookings go here from now on; upcoming events move from the previous write connection. "
        "`false` is refused: make another connection the write one, or disconnect this one.",
    )
    conflicts = serializers.BooleanField(required=False, help_text="Whether its busy times count for conflicts.")

    def validate_write(self, value):
        if not value:
            raise serializers.ValidationError("Make another connection the write one instead.")
        return value

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Give `write` or `conflicts`.")
        return attrs


class BulkProgressSerializer(serializers.Serializer):
    """The bulk job under way on a connection: operations done of the total known so far."""

    kind = serializers.ChoiceField(choices=list(KINDS))
    done = serializers.IntegerField()
    total = serializers.IntegerField()
    started_at = serializers.DateTimeField()


class StatusSerializer(serializers.Serializer):
    connected = serializers.BooleanField()
    provider = serializers.CharField(allow_null=True)
    calendar_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=[*CalendarToken.Status.values, "disconnected"])
    last_error = serializers.CharField(allow_blank=True)
    paused_until = serializers.DateTimeField(
        allow_null=True,
        help_text="Writes to this calendar wait until then: the provider's usage limit for the account "
        "(Google's “Calendar usage limits exceeded”). Bookings stay pending and are written after it; null when not paused.",
    )
    scopes = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)
    connected_at = serializers.DateTimeField(allow_null=True)
    pending_syncs = serializers.IntegerField()
    failed_syncs = serializers.IntegerField()
    connected_by = serializers.CharField(allow_null=True, help_text="Who made the connection (shared connections).")
    bulk = BulkProgressSerializer(
        allow_null=True, help_text="The backfill, calendar move or resync under way (null when none)."
    )
    resend_invitations = serializers.IntegerField(
        help_text="Bookings with guests that a change of calendar would send again (each guest gets a "
        "cancellation and a new invitation): the provider cannot move events between calendars (Microsoft 365). "
        "0 when events move silently (Google) or there is none. Show it before the member changes calendar."
    )
    providers = ProviderSerializer(
        many=True,
        help_text="OAuth providers a member can connect on this server (`auth/{provider}`); Apple iCloud / CalDAV "
        "and ICS links are always offered, through `connections/caldav` and `connections/ics`.",
    )
    connections = ConnectionSerializer(
        many=True, help_text="Every connection of the owner; the fields above are the write one's."
    )

    @classmethod
    def of(cls, state):
        """A connection's state (`api.connection`) with the providers a member can connect here."""
        oauth = [p for p in configured_providers() if p.oauth]  # CalDAV and ICS: their own connect endpoints
        return cls({**state, "providers": [{"name": p.name, "label": p.label} for p in oauth]})


class SharedConnectionSerializer(StatusSerializer):
    """A shared connection in the staff listing: its owner, and the same state as a member's status."""

    owner_kind = serializers.CharField()
    owner_id = serializers.CharField()
    owner_label = serializers.CharField()
    providers = None  # type: ignore[assignment]  # DRF: None drops the inherited field
    connections = None  # type: ignore[assignment]  # a shared owner has one connection: the fields above


class CalendarSerializer(serializers.Serializer):
    id = serializers.CharField()
    summary = serializers.CharField()
    primary = serializers.BooleanField()
    access_role = serializers.CharField()
    selected = serializers.BooleanField()


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 1024, "pattern": r"^[^\x00]*[^\s\x00][^\x00]*$"})
class CalendarIdField(serializers.CharField):
    """A CharField whose schema says what DRF enforces: no NUL character, and not blank once trimmed."""


class SelectCalendarSerializer(serializers.Serializer):
    calendar_id = CalendarIdField(
        max_length=1024, help_text="`primary`, or the id of one of your writable calendars (see GET calendars)."
    )


class DisconnectSerializer(serializers.Serializer):
    disconnected = serializers.BooleanField()
    revoked = serializers.BooleanField()
    reason = serializers.CharField()


class SyncStateSerializer(serializers.Serializer):
    """Per-object sync state, for hosts to embed in their own serializers."""

    state = serializers.CharField()
    event_id = serializers.CharField(allow_null=True)
    last_error = serializers.CharField(allow_blank=True)
    synced_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField()


class FeedSerializer(serializers.Serializer):
    url = serializers.URLField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)


class AccessLogSerializer(serializers.ModelSerializer):
    class Meta:
        model = AccessLog
        fields = ["created_at", "provider", "operation", "reason", "outcome", "object_ref", "count"]


class BusySpanSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    connection = serializers.UUIDField(help_text="The connection whose calendar holds it.")
    title = serializers.CharField(required=False, help_text="Only where the operator keeps titles (PULL_KEEP_TITLES).")


class BusyErrorSerializer(serializers.Serializer):
    connection = serializers.UUIDField()
    code = serializers.CharField(help_text="`needs_reauth`, `provider_unavailable`, or the provider's refusal.")


class BusySerializer(serializers.Serializer):
    """Busy times in the window from every connection that counts for conflicts, our own events left out;
    a connection that could not be read is in `errors` (the others still answer)."""

    busy = BusySpanSerializer(many=True)
    errors = BusyErrorSerializer(many=True)
    provider = serializers.CharField(allow_null=True, help_text="The write connection's provider.")
    calendar_id = serializers.CharField(allow_null=True, help_text="The write connection's calendar.")
    checked_at = serializers.DateTimeField()


class TestPushSerializer(serializers.Serializer):
    ok = serializers.BooleanField()


class CapabilitiesSerializer(serializers.Serializer):
    conference = serializers.ListField(
        child=serializers.ChoiceField(choices=["google_meet", "teams"]),
        help_text="Video meetings the connected write calendar can make now ([] when none, or not connected).",
    )
    guests = serializers.BooleanField(help_text="Whether its events can carry guests (attendees).")


APP_PASSWORD_HINT = (
    "For Apple iCloud use an app-specific password (appleid.apple.com → Sign-In and Security → "
    "App-Specific Passwords), not your Apple ID password."
)


class CalDAVConnectSerializer(serializers.Serializer):
    """Connect an Apple iCloud or other CalDAV account. The password is never returned."""

    preset = serializers.ChoiceField(
        choices=sorted(PRESETS),
        required=False,
        help_text="`icloud`: Apple's server; `server_url` may then be left out.",
    )
    server_url = serializers.CharField(
        max_length=2048,
        required=False,
        allow_blank=True,
        help_text="The CalDAV server's https address (e.g. https://caldav.fastmail.com/). Required without `preset`.",
    )
    username = serializers.CharField(max_length=320, help_text="The account's user name (for iCloud: the Apple ID).")
    password = serializers.CharField(
        max_length=1024, write_only=True, trim_whitespace=False, help_text=f"The password. {APP_PASSWORD_HINT}"
    )

    def validate(self, data):
        url = (data.get("server_url") or "").strip() or PRESETS.get(data.get("preset", ""), "")
        if not url:
            raise serializers.ValidationError({"server_url": "Required (or choose a preset)."})
        return {**data, "server_url": url}


class IcsConnectSerializer(serializers.Serializer):
    """Connect an ICS link (read-only; it counts for conflicts). The link is never returned."""

    url = serializers.CharField(
        max_length=2048, help_text="The calendar's secret iCal address (https:// or webcal://), or any .ics URL."
    )
