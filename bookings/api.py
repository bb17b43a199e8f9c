"""REST API for workspaces and bookings. Members see and change only their own bookings."""

from datetime import UTC, datetime, timedelta

from django.db import models
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.utils import html

from calendar_sync import api as calendar_sync
from calendar_sync.api import ErrorSerializer, SyncStateSerializer

from . import services
from .models import Booking, Series, Workspace


def _error(description):
    return OpenApiResponse(ErrorSerializer, description=description)


#: What the bookings API answers besides success: every body has `code` and `detail` (400s also name the fields).
ERRORS = {
    400: _error("Bad input: the body names the field (code `invalid`)"),
    401: _error("Not signed in, or the credentials are wrong (see WWW-Authenticate)"),
    403: _error("Not allowed (including a failed CSRF check when signed in with a session cookie)"),
    404: _error("No such booking among yours (others' bookings are 404 too)"),
    409: _error(
        "The lifecycle refuses it: code `overlap` (the workspace is booked then) or `invalid_transition` (e.g. a cancelled booking)"
    ),
    413: _error("Request body too large"),
    415: _error("Unsupported request body media type"),
}


def errors(*codes):
    return {code: ERRORS[code] for code in codes}


BOOKING_ID = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="A booking's id: a member gets 404 for anyone else's (staff see every booking).",
)
WORKSPACE_404 = _error("No such workspace")


class IsStaffOrReadOnly(permissions.BasePermission):
    def has_permission(self, request, view):
        return request.method in permissions.SAFE_METHODS or request.user.is_staff


class FormBlankCharField(serializers.CharField):
    """DRF reads a blank form or multipart value of a field with a default as "not sent" (so the
    default applies); read it as blank, so a form body gets the same 400 as JSON does."""

    def get_value(self, dictionary):
        if html.is_html_input(dictionary) and dictionary.get(self.field_name) == "":
            return ""
        return super().get_value(dictionary)


class WorkspaceSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: FormBlankCharField,
    }

    class Meta:
        model = Workspace
        fields = ["id", "name", "address", "time_zone", "created_at"]
        read_only_fields = ["id", "created_at"]


@extend_schema_view(
    list=extend_schema(responses={200: WorkspaceSerializer(many=True), **errors(401)}),
    retrieve=extend_schema(responses={200: WorkspaceSerializer, **errors(401), 404: WORKSPACE_404}),
    create=extend_schema(
        responses={
            201: WorkspaceSerializer,
            **errors(400, 401, 413, 415),
            403: _error("Only staff create workspaces (or a failed CSRF check with a session cookie)"),
        }
    ),
)
class WorkspaceViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    queryset = Workspace.objects.all()
    serializer_class = WorkspaceSerializer
    permission_classes = [permissions.IsAuthenticated, IsStaffOrReadOnly]


class BookingSyncSerializer(SyncStateSerializer):
    """The member's calendar at the top level (as before room calendars), and every destination by name."""

    member = SyncStateSerializer(allow_null=True, help_text="The member's own calendar.")
    workspace = SyncStateSerializer(allow_null=True, help_text="The workspace's room calendar.")


GUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "format": "email"},
        "response": {"type": "string", "enum": ["needsAction", "accepted", "declined", "tentative"]},
    },
    "required": ["email"],
}


@extend_schema_field(
    {
        "type": "array",
        "maxItems": services.MAX_GUESTS,
        "items": {"oneOf": [{"type": "string", "format": "email"}, GUEST_SCHEMA]},
        "description": "Guests: attendees of the member's own calendar event (never of the room's). Write a list "
        f"of up to {services.MAX_GUESTS} e-mail addresses (or the objects read); each is stripped, its domain "
        "lower-cased, duplicates dropped, and the member's own address refused. Read "
        '`[{"email", "response"}]`, `response` one of `needsAction` (new guests), `accepted`, `declined`, '
        "`tentative`, as the calendar last reported it; a guest kept in the list keeps their answer.",
    }
)
class GuestsField(serializers.Field):
    """Written as e-mail addresses (or the objects read back), read as [{"email", "response"}]."""

    default_error_messages = {"invalid": "A list of e-mail addresses."}

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("invalid")
        emails = []
        for item in data:
            if isinstance(item, dict):
                item = item.get("email")
            if not isinstance(item, str):
                self.fail("invalid")
            emails.append(item)
        return emails

    def to_representation(self, value):
        guests = value if isinstance(value, list) else []
        return [
            {"email": str(g["email"]), "response": str(g.get("response") or "needsAction")}
            for g in guests
            if isinstance(g, dict) and g.get("email")
        ]


class ConferenceStateSerializer(serializers.Serializer):
    requested = serializers.ChoiceField(choices=Booking.Conference.choices, help_text="The video link asked for.")
    type = serializers.CharField(help_text='"google_meet" or "teams" as made; "" when none.')
    join_url = serializers.CharField(help_text='The meeting\'s join link; "" until it is ready.')
    status = serializers.ChoiceField(choices=["none", "pending", "ready", "failed"])
    reason = serializers.CharField(required=False, help_text="Why it failed (only when failed).")


class ConferenceField(serializers.Field):
    """In: "none" (default), "auto", "google_meet" or "teams". Out: the booking's one video meeting as
    its calendars made it: {"requested", "type", "join_url", "status"} (and "reason" when failed)."""

    default_error_messages = {"invalid_choice": '"{input}" is not one of: none, auto, google_meet, teams.'}

    def __init__(self, **kwargs):
        super().__init__(source="*", **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str) or data not in Booking.Conference.values:
            self.fail("invalid_choice", input=str(data)[:50])
        return {"conference": data}

    def to_representation(self, booking):
        info = booking.conference_info or {}
        requested = booking.conference or Booking.Conference.NONE
        status = info.get("status") or "none"
        state = {
            "requested": requested,
            "type": info.get("type") or "",
            "join_url": info.get("join_url") or "",
            "status": status,
        }
        if status == "failed":
            state["reason"] = info.get("reason") or ""
        return state


class ConferenceFieldSchema(OpenApiSerializerFieldExtension):
    """The OpenAPI shape of `ConferenceField`: a string in requests, an object in responses."""

    target_class = ConferenceField

    def map_serializer_field(self, auto_schema, direction):
        if direction == "request":
            choice = serializers.ChoiceField(
                choices=Booking.Conference.choices,
                default=Booking.Conference.NONE,
                help_text="The video link asked for: none, auto (what the calendar can make), google_meet or teams.",
            )
            choice.bind("conference", ConferenceStateSerializer())
            return auto_schema._map_serializer_field(choice, direction)
        return auto_schema.resolve_serializer(ConferenceStateSerializer, direction).ref


class BookingSerializer(serializers.ModelSerializer):
    workspace = serializers.PrimaryKeyRelatedField(queryset=Workspace.objects.all())
    calendar_sync = serializers.SerializerMethodField()
    guests = GuestsField(required=False)
    conference = ConferenceField(required=False)

    class Meta:
        model = Booking
        fields = [
            "id",
            "user",
            "workspace",
            "title",
            "start",
            "end",
            "status",
            "series",
            "guests",
            "google_calendar_event_id",
            "conference",
            "calendar_sync",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "user", "status", "series", "google_calendar_event_id", "created_at", "updated_at"]
        extra_kwargs = {
            "start": {
                "help_text": "Between 1900-01-01 and 2999-12-31 (UTC), and within BOOKING_HORIZON_DAYS (365) from now."
            },
            "end": {
                "help_text": "After `start`, at most BOOKING_MAX_HOURS (24) after it, and within BOOKING_HORIZON_DAYS (365) from now."
            },
            "series": {"help_text": "The series this booking is an occurrence of, or null."},
        }

    @extend_schema_field(
        BookingSyncSerializer(allow_null=True, help_text="Calendar sync state; null before the first sync.")
    )
    def get_calendar_sync(self, booking) -> dict | None:
        states = self.context.get("sync_states")
        if states is None:
            states = calendar_sync.sync_states("booking", [booking])
        mine = states.get(str(booking.pk)) or {}
        if not mine:
            return None
        return BookingSyncSerializer(
            {
                **(mine.get("member") or next(iter(mine.values()))),
                "member": mine.get("member"),
                "workspace": mine.get("workspace"),
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
        if "guests" in attrs:
            request = self.context.get("request")
            member = self.instance.user if self.instance is not None else getattr(request, "user", None)
            try:
                attrs["guests"] = services.clean_guests(attrs["guests"], getattr(member, "email", "") or "")
            except services.BookingError as exc:
                raise ValidationError({"guests": [str(exc)]}) from None
        return attrs


class BookingUpdateSerializer(BookingSerializer):
    """A booking keeps its workspace: changing it is cancel and book again."""

    workspace = serializers.PrimaryKeyRelatedField(read_only=True)


def _calendar_date(value):
    """Refuse times no calendar can hold (and that overflow in a workspace's time zone)."""
    if not EARLIEST <= value <= LATEST:
        raise ValidationError(f"Must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}.")
    return value


EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)


@extend_schema_view(
    list=extend_schema(responses={200: BookingSerializer(many=True), **errors(401)}),
    retrieve=extend_schema(parameters=[BOOKING_ID], responses={200: BookingSerializer, **errors(401, 404)}),
    create=extend_schema(
        responses={201: BookingSerializer, **errors(400, 401, 403, 413, 415)},
    ),
    partial_update=extend_schema(
        parameters=[BOOKING_ID],
        responses={200: BookingUpdateSerializer, **errors(400, 401, 403, 404, 409, 413, 415)},
    ),
)
class BookingViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
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
            kwargs.setdefault("context", self.get_serializer_context())["sync_states"] = calendar_sync.sync_states(
                "booking", args[0]
            )
        return super().get_serializer(*args, **kwargs)

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.create_booking(user=self.request.user, **data)

    def perform_update(self, serializer):
        fields = ("title", "start", "end", "guests", "conference")
        changes = {k: v for k, v in serializer.validated_data.items() if k in fields}
        serializer.instance = self._fresh(services.update_booking(serializer.instance, **changes))

    @staticmethod
    def _fresh(booking):
        # With eager tasks (no broker) the sync already ran on commit: show its result.
        booking.refresh_from_db(fields=["google_calendar_event_id", "conference_info"])
        return booking

    @extend_schema(
        request=None, parameters=[BOOKING_ID], responses={200: BookingSerializer, **errors(401, 403, 404, 409)}
    )
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        booking = self._fresh(services.confirm_booking(self.get_object()))
        return Response(self.get_serializer(booking).data)

    @extend_schema(
        request=None,
        parameters=[BOOKING_ID],
        responses={
            200: OpenApiResponse(BookingSerializer, description="Cancelled (cancelling again changes nothing)"),
            **errors(401, 403, 404),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        booking = self._fresh(services.cancel_booking(self.get_object()))
        return Response(self.get_serializer(booking).data)


SERIES_ID = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="A series' id: a member gets 404 for anyone else's (staff see every series).",
)
SERIES_CONFLICT = _error(
    "Code `overlap`: occurrences clash with the workspace's confirmed bookings or its room calendar; "
    "`dates` lists each one's local date (YYYY-MM-DD) and nothing changed"
)


class OccurrenceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Booking
        fields = ["id", "start", "end", "status"]


class SeriesSerializer(serializers.ModelSerializer):
    start_time = serializers.TimeField(source="local_start", format="%H:%M", help_text="Local start (HH:MM).")
    end_time = serializers.SerializerMethodField(help_text="Local end (HH:MM).")
    bookings = serializers.SerializerMethodField()

    class Meta:
        model = Series
        fields = ["id", "user", "workspace", "title", "rule", "time_zone", "start_time", "end_time", "bookings"]
        read_only_fields = fields

    def get_end_time(self, series) -> str:
        return (datetime.combine(datetime(2000, 1, 1), series.local_start) + series.duration).strftime("%H:%M")

    @extend_schema_field(OccurrenceSerializer(many=True))
    def get_bookings(self, series):
        return OccurrenceSerializer(series.bookings.order_by("start"), many=True).data


class SeriesCreatedSerializer(SeriesSerializer):
    skipped = serializers.SerializerMethodField(help_text="Local dates left out with `skip_conflicts`.")

    class Meta(SeriesSerializer.Meta):
        fields = [*SeriesSerializer.Meta.fields, "skipped"]
        read_only_fields = fields

    def get_skipped(self, series) -> list[str]:
        return self.context.get("skipped", [])


class SeriesCreateSerializer(serializers.Serializer):
    workspace = serializers.PrimaryKeyRelatedField(queryset=Workspace.objects.all())
    title = serializers.CharField(max_length=200)
    start = serializers.DateTimeField(help_text="The first occurrence's start (ISO 8601 with offset).")
    end = serializers.DateTimeField(help_text="The first occurrence's end; every occurrence lasts as long.")
    rule = serializers.CharField(
        max_length=500,
        help_text="RFC 5545 RRULE: FREQ (DAILY, WEEKLY, MONTHLY), INTERVAL, BYDAY, BYMONTHDAY and COUNT or UNTIL; "
        "at most 200 occurrences within one year, expanded in the workspace's time zone.",
    )
    skip_conflicts = serializers.BooleanField(
        default=False, help_text="Leave out the occurrences that clash instead of refusing the series."
    )

    def validate_start(self, value):
        return _calendar_date(value)

    def validate_end(self, value):
        return _calendar_date(value)


class SeriesUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False)
    start_time = serializers.TimeField(required=False, help_text="New local start of every future occurrence (HH:MM).")
    end_time = serializers.TimeField(
        required=False, help_text="New local end (HH:MM); the next day if not after the start."
    )
    start = serializers.DateTimeField(required=False, help_text="Its local time becomes the new start time.")
    end = serializers.DateTimeField(required=False, help_text="Its local time becomes the new end time.")

    def validate_start(self, value):
        return _calendar_date(value)

    def validate_end(self, value):
        return _calendar_date(value)

    def validate(self, attrs):
        for exact, local in (("start", "start_time"), ("end", "end_time")):
            if exact in attrs and local in attrs:
                raise ValidationError({exact: [f"Give `{exact}` or `{local}`, not both."]})
        if "start" in attrs and "end" in attrs and not timedelta(0) < attrs["end"] - attrs["start"]:
            raise ValidationError({"end": ["End must be after start."]})
        return attrs


class SeriesCancelSerializer(serializers.Serializer):
    pass


# "from" is a Python keyword: declared by name.
SeriesCancelSerializer._declared_fields["from"] = serializers.UUIDField(
    required=False, help_text="An occurrence's id: cancel it and every later one (default: every future one)."
)


@extend_schema_view(
    retrieve=extend_schema(parameters=[SERIES_ID], responses={200: SeriesSerializer, **errors(401, 404)}),
)
class SeriesViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Recurring bookings: one rule, one ordinary Booking per occurrence (each keeps its own endpoints)."""

    serializer_class = SeriesSerializer
    queryset = Series.objects.none()
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        qs = Series.objects.select_related("workspace")
        return qs if self.request.user.is_staff else qs.filter(user=self.request.user)

    def handle_exception(self, exc):
        if isinstance(exc, services.SeriesConflict):
            return Response({"code": exc.code, "detail": str(exc), "dates": exc.dates}, status=409)
        return super().handle_exception(exc)

    @extend_schema(
        request=SeriesCreateSerializer,
        responses={201: SeriesCreatedSerializer, **errors(400, 401, 403, 413, 415), 409: SERIES_CONFLICT},
    )
    def create(self, request):
        data = _valid(SeriesCreateSerializer, request.data)
        series, skipped = services.create_series(user=request.user, **data)
        return Response(SeriesCreatedSerializer(series, context={"skipped": skipped}).data, status=201)

    @extend_schema(
        request=SeriesUpdateSerializer,
        parameters=[SERIES_ID],
        responses={200: SeriesSerializer, **errors(400, 401, 403, 404, 413, 415), 409: SERIES_CONFLICT},
    )
    def partial_update(self, request, pk=None):
        series = services.update_series(self.get_object(), **_valid(SeriesUpdateSerializer, request.data))
        return Response(SeriesSerializer(series).data)

    @extend_schema(
        request=None,
        parameters=[SERIES_ID],
        responses={200: SeriesSerializer, **errors(401, 403, 404), 409: SERIES_CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def confirm(self, request, pk=None):
        return Response(SeriesSerializer(services.confirm_series(self.get_object())).data)

    @extend_schema(
        request=SeriesCancelSerializer,
        parameters=[SERIES_ID],
        responses={
            200: OpenApiResponse(SeriesSerializer, description="Cancelled (cancelling again changes nothing)"),
            **errors(400, 401, 403, 404, 413, 415),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        series = self.get_object()
        occurrence = _valid(SeriesCancelSerializer, request.data).get("from")
        if occurrence is not None:
            occurrence = series.bookings.filter(pk=occurrence).first()
            if occurrence is None:
                raise ValidationError({"from": ["No such occurrence in this series."]})
        return Response(SeriesSerializer(services.cancel_series(series, from_booking=occurrence)).data)


def _valid(serializer_class, data):
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
