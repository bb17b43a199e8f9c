import uuid
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def validate_time_zone(value):
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone.")


class Workspace(models.Model):
    name = models.CharField(max_length=200)
    address = models.CharField(max_length=500, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Series(models.Model):
    """A booking that repeats: an RFC 5545 RRULE expanded in the workspace's zone into ordinary Bookings.

    `start` is the first occurrence (DTSTART); `local_start` and `duration` say what every occurrence
    is (09:00 local for 1 hour), so daylight-saving changes never move it; `time_zone` is the zone the
    rule was expanded in (the workspace's, kept so a later change of the workspace does not re-read it).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="booking_series")
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="series")
    title = models.CharField(max_length=200)
    rule = models.CharField(max_length=500, help_text="RFC 5545 RRULE, normalized (UNTIL in UTC).")
    time_zone = models.CharField(max_length=64, validators=[validate_time_zone])
    start = models.DateTimeField(help_text="The first occurrence's start (DTSTART).")
    local_start = models.TimeField(help_text="Every occurrence's start, in the series' zone.")
    duration = models.DurationField(help_text="Every occurrence's length (exact, as calendars count it).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["start"]
        verbose_name_plural = "series"

    def __str__(self):
        return f"{self.title} @ {self.workspace} ({self.rule})"


class Booking(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        CONFIRMED = "confirmed", "Confirmed"
        CANCELLED = "cancelled", "Cancelled"

    class Conference(models.TextChoices):
        NONE = "none", "No video link"
        AUTO = "auto", "What the calendar offers"
        GOOGLE_MEET = "google_meet", "Google Meet"
        TEAMS = "teams", "Microsoft Teams"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bookings")
    workspace = models.ForeignKey(Workspace, on_delete=models.PROTECT, related_name="bookings")
    title = models.CharField(max_length=200)
    start = models.DateTimeField()
    end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    google_calendar_event_id = models.CharField(max_length=1024, null=True, blank=True, editable=False)
    series = models.ForeignKey(Series, on_delete=models.SET_NULL, null=True, blank=True, related_name="bookings")
    guests = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"email", "response"}]: attendees of the member\'s event, answers as last reported.',
    )
    conference = models.CharField(max_length=16, choices=Conference.choices, default=Conference.NONE)
    conference_info = models.JSONField(
        default=dict,
        blank=True,
        editable=False,
        help_text='{"type", "join_url", "status", "reason"} as the calendar made it.',
    )
    series_start = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="An occurrence's start as its series made it (RECURRENCE-ID)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["start"]
        indexes = [models.Index(fields=["workspace", "status", "start"]), models.Index(fields=["user", "start"])]
        constraints = [
            models.CheckConstraint(condition=models.Q(end__gt=models.F("start")), name="booking_end_after_start"),
            models.UniqueConstraint(fields=["series", "series_start"], name="booking_series_occurrence_unique"),
        ]

    def __str__(self):
        return f"{self.title} @ {self.workspace} ({self.start:%Y-%m-%d %H:%M})"
