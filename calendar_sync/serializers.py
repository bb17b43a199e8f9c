from rest_framework import serializers

from .models import AccessLog, CalendarToken, SyncRecord
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
    providers = ProviderSerializer(many=True, help_text="Providers a member can connect on this server.")

    @classmethod
    def for_user(cls, user):
        token = CalendarToken.objects.defer(*CalendarToken.SECRET_FIELDS).filter(user=user).first()
        counts = {SyncRecord.State.PENDING: 0, SyncRecord.State.FAILED: 0}
        for state in SyncRecord.objects.filter(user=user, state__in=counts).values_list("state", flat=True):
            counts[state] += 1
        return cls(
            {
                "connected": token is not None,
                "provider": token and token.provider,
                "calendar_id": token and token.calendar_id,
                "status": token.status if token else "disconnected",
                "last_error": token.last_error if token else "",
                "scopes": token.scopes if token else [],
                "expires_at": token and token.expires_at,
                "connected_at": token and token.created_at,
                "pending_syncs": counts[SyncRecord.State.PENDING],
                "failed_syncs": counts[SyncRecord.State.FAILED],
                "providers": [{"name": p.name, "label": p.label} for p in configured_providers()],
            }
        )


class CalendarSerializer(serializers.Serializer):
    id = serializers.CharField()
    summary = serializers.CharField()
    primary = serializers.BooleanField()
    access_role = serializers.CharField()
    selected = serializers.BooleanField()


class SelectCalendarSerializer(serializers.Serializer):
    calendar_id = serializers.CharField(max_length=1024)


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
