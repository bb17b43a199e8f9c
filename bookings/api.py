"""REST API for workspaces and bookings. Members see and change only their own bookings."""
from datetime import datetime, timezone

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from calendar_sync.models import SyncRecord
from calendar_sync.serializers import SyncStateSerializer

from . import services
from .models import Booking, Workspace


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or request.user.is_staff


class WorkspaceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Workspace
        fields = ["id", "name", "address", "time_zone", "created_at"]
        read_only_fields = ["id", "created_at"]


class WorkspaceViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    queryset = Workspace.objects.all()
    serializer_class = WorkspaceSerializer
    permission_classes = [permissions.IsAuthenticated, IsStaffOrReadOnly]


class BookingSerializer(serializers.ModelSerializer):
    workspace = serializers.PrimaryKeyRelatedField(queryset=Workspace.objects.all())
    calendar_sync = serializers.SerializerMethodField()

    class Meta:
        model = Booking
        fields = ["id", "user", "workspace", "title", "start", "end", "status", "google_calendar_event_id", "calendar_sync", "created_at", "updated_at"]
        read_only_fields = ["id", "user", "status", "google_calendar_event_id", "created_at", "updated_at"]

    @extend_schema(responses=SyncStateSerializer(allow_null=True))
    def get_calendar_sync(self, booking) -> dict | None:
        record = self.context.get("sync_records", {}).get(str(booking.pk))
        if record is None and "sync_records" not in self.context:
            record = SyncRecord.objects.filter(source="booking", object_id=str(booking.pk)).first()
        if record is None:
            return None
        return SyncStateSerializer(
            {
                "state": record.state,
                "event_id": booking.google_calendar_event_id,
                "last_error": record.last_error,
                "synced_at": record.synced_at,
                "attempts": record.attempts,
            }
        ).data

    def validate_start(self, value):
        return _calendar_date(value)

    def validate_end(self, value):
        return _calendar_date(value)

    def validate(self, attrs):
        start = attrs.get("start", getattr(self.instance, "start", None))
        end = attrs.get("end", getattr(self.instance, "end", None))
        if start and end and end <= start:
            raise ValidationError({"end": ["End must be after start."]})
        return attrs


class BookingUpdateSerializer(BookingSerializer):
    """A booking keeps its workspace: changing it is cancel and book again."""

    workspace = serializers.PrimaryKeyRelatedField(read_only=True)


def _calendar_date(value):
    """Refuse times no calendar can hold (and that overflow in a workspace's time zone)."""
    if not EARLIEST <= value <= LATEST:
        raise ValidationError(f"Must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}.")
    return value


EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2999, 12, 31, tzinfo=timezone.utc)


class BookingViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet):
    serializer_class = BookingSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        qs = Booking.objects.all()
        return qs if self.request.user.is_staff else qs.filter(user=self.request.user)

    def get_serializer_class(self):
        return BookingUpdateSerializer if self.action == "partial_update" else BookingSerializer

    def get_serializer(self, *args, **kwargs):
        # One query for the sync state of every booking on the page (no N+1).
        if args and not isinstance(args[0], Booking) and self.request.method == "GET":
            ids = [str(b.pk) for b in args[0]]
            records = SyncRecord.objects.filter(source="booking", object_id__in=ids)
            kwargs.setdefault("context", self.get_serializer_context())["sync_records"] = {r.object_id: r for r in records}
        return super().get_serializer(*args, **kwargs)

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.create_booking(user=self.request.user, **data)

    def perform_update(self, serializer):
        changes = {k: v for k, v in serializer.validated_data.items() if k in ("title", "start", "end")}
        serializer.instance = self._fresh(services.update_booking(serializer.instance, **changes))

    @staticmethod
    def _fresh(booking):
        # With eager tasks (no broker) the sync already ran on commit: show its result.
        booking.refresh_from_db(fields=["google_calendar_event_id"])
        return booking

    @extend_schema(request=None, responses=BookingSerializer)
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        booking = self._fresh(services.confirm_booking(self.get_object()))
        return Response(self.get_serializer(booking).data)

    @extend_schema(request=None, responses=BookingSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        booking = self._fresh(services.cancel_booking(self.get_object()))
        return Response(self.get_serializer(booking).data)
