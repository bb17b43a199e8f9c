from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import AccessLog, CalendarToken
from .progress import KINDS
from .providers import configured_providers


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
    scopes = serializers.ListField(child=serializers.CharField())
    expires_at = serializers.DateTimeField(allow_null=True)
    connected_at = serializers.DateTimeField(allow_null=True)
    pending_syncs = serializers.IntegerField()
    failed_syncs = serializers.IntegerField()
    connected_by = serializers.CharField(allow_null=True, help_text="Who made the connection (shared connections).")
    bulk = BulkProgressSerializer(
        allow_null=True, help_text="The backfill, calendar move or resync under way (null when none)."
    )
    providers = ProviderSerializer(many=True, help_text="Providers a member can connect on this server.")

    @classmethod
    def of(cls, state):
        """A connection's state (`api.connection`) with the providers a member can connect here."""
        return cls({**state, "providers": [{"name": p.name, "label": p.label} for p in configured_providers()]})


class SharedConnectionSerializer(StatusSerializer):
    """A shared connection in the staff listing: its owner, and the same state as a member's status."""

    owner_kind = serializers.CharField()
    owner_id = serializers.CharField()
    owner_label = serializers.CharField()
    providers = None  # type: ignore[assignment]  # DRF: None drops the inherited field


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


class BusySerializer(serializers.Serializer):
    """Busy times of the member's chosen calendar in the window, our own events left out."""

    busy = BusySpanSerializer(many=True)
    provider = serializers.CharField()
    calendar_id = serializers.CharField()
    checked_at = serializers.DateTimeField()


class TestPushSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
