"""The booking lifecycle, pending -> confirmed -> cancelled, with its rules in one place.

Each service runs in a transaction and locks the workspace row while checking overlaps, so
two confirmations racing for one slot cannot both succeed.
"""

from bisect import bisect_left
from datetime import datetime, timedelta
from itertools import accumulate
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.utils import timezone

from calendar_sync import api as calendar_sync

from . import recurrence
from .models import Booking, Series, Workspace


class BookingError(Exception):
    """A rule of the lifecycle was broken. `field` names the input at fault, if any."""

    def __init__(self, message, field=None, code="invalid"):
        super().__init__(message)
        self.field, self.code = field, code


class SeriesConflict(BookingError):
    """Occurrences of a series clash with the workspace's bookings: `dates` names each (local dates)."""

    def __init__(self, message, dates):
        super().__init__(message, code="overlap")
        self.dates = dates


def _check_times(start, end):
    if start is None or end is None:
        raise BookingError("Start and end are required.", field="start")
    if end <= start:
        raise BookingError("End must be after start.", field="end")


def _check_bounds(start, end):
    """A booking lies within the horizon (room calendars are read that far ahead) and lasts at most
    BOOKING_MAX_HOURS (no one holds a room for everyone else)."""
    hours = settings.BOOKING_MAX_HOURS
    if end - start > timedelta(hours=hours):
        raise BookingError(f"A booking may last at most {hours} hours.", field="end")
    days = settings.BOOKING_HORIZON_DAYS
    horizon = timezone.now() + timedelta(days=days)
    if end > horizon:
        raise BookingError(
            f"Bookings can be made at most {days} days ahead.", field="start" if start >= horizon else "end"
        )


def when(start, end, time_zone):
    """A span as people read it: in the workspace's zone, minutes not seconds, the zone named
    ("Tue 1 Dec 2026, 09:00–11:00 (Europe/Lisbon)"; the end's date too when it is another day)."""
    zone = ZoneInfo(time_zone)
    start, end = start.astimezone(zone), end.astimezone(zone)
    day = f"{start:%a} {start.day} {start:%b %Y}"
    until = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%a} {end.day} {end:%b %Y}, {end:%H:%M}"
    return f"{day}, {start:%H:%M}–{until} ({time_zone})"


def _check_free(booking):
    clash = (
        Booking.objects.filter(
            workspace_id=booking.workspace_id,
            status=Booking.Status.CONFIRMED,
            start__lt=booking.end,
            end__gt=booking.start,
        )
        .exclude(pk=booking.pk)
        .order_by("start")
        .values_list("start", "end")
        .first()
    )
    if clash:
        workspace = booking.workspace  # its name and zone, for the message
        raise BookingError(
            f"{workspace.name} is already booked on {when(*clash, workspace.time_zone)}.", field="start", code="overlap"
        )
    # Bookings made straight in the room's calendar (read in the background, never here).
    for block in calendar_sync.external_busy(
        calendar_sync.Owner("workspace", booking.workspace_id), booking.start, booking.end
    )[:1]:
        workspace = booking.workspace
        raise BookingError(
            f"{workspace.name} is booked in its room calendar on {when(block.start, block.end, workspace.time_zone)}.",
            field="start",
            code="overlap",
        )


MAX_GUESTS = 50
_email = EmailValidator()


def clean_guests(emails, member_email=""):
    """Guests as a booking keeps them: each address stripped, its domain lower-cased, each once (the
    first spelling kept), at most MAX_GUESTS, never the member themself. BookingError (field `guests`)
    naming the first address at fault."""
    if not isinstance(emails, (list, tuple)):
        raise BookingError("Guests are a list of e-mail addresses.", field="guests")
    if len(emails) > MAX_GUESTS:
        raise BookingError(f"A booking has at most {MAX_GUESTS} guests.", field="guests")
    cleaned, seen = [], set()
    for raw in emails:
        if not isinstance(raw, str):
            raise BookingError("Guests are a list of e-mail addresses.", field="guests")
        local, _, domain = raw.strip().rpartition("@")
        address = f"{local}@{domain.lower()}" if local else raw.strip()
        try:
            _email(address)
        except ValidationError:
            raise BookingError(f"{address[:100]!r} is not an e-mail address.", field="guests") from None
        if len(address) > 254:
            raise BookingError("An e-mail address has at most 254 characters.", field="guests")
        if member_email and address.lower() == member_email.strip().lower():
            raise BookingError("You are the organizer: leave your own address out of the guests.", field="guests")
        if address.lower() not in seen:
            seen.add(address.lower())
            cleaned.append(address)
    return cleaned


def _guests(before, emails):
    """[{"email", "response"}] for `emails`: a guest already invited keeps their answer, a new one needsAction."""
    answers = {
        str(g["email"]).lower(): g.get("response") or "needsAction"
        for g in (before if isinstance(before, list) else [])
        if isinstance(g, dict) and g.get("email")
    }
    return [{"email": e, "response": answers.get(e.lower(), "needsAction")} for e in emails]


def _lock(booking_id):
    booking = Booking.objects.select_for_update().get(pk=booking_id)
    Workspace.objects.select_for_update().get(pk=booking.workspace_id)
    return booking


def create_booking(*, user, workspace, title, start, end, guests=(), conference=Booking.Conference.NONE):
    _check_times(start, end)
    _check_bounds(start, end)
    guests = _guests([], clean_guests(list(guests), user.email))
    return Booking.objects.create(
        user=user, workspace=workspace, title=title, start=start, end=end, guests=guests, conference=conference
    )


@transaction.atomic
def confirm_booking(booking):
    booking = _lock(booking.pk)
    if booking.status == Booking.Status.CANCELLED:
        raise BookingError("A cancelled booking cannot be confirmed.", code="invalid_transition")
    if booking.status == Booking.Status.CONFIRMED:
        return booking
    _check_free(booking)
    booking.status = Booking.Status.CONFIRMED
    booking.save(update_fields=["status", "updated_at"])
    return booking


@transaction.atomic
def cancel_booking(booking):
    booking = _lock(booking.pk)
    if booking.status != Booking.Status.CANCELLED:
        booking.status = Booking.Status.CANCELLED
        booking.save(update_fields=["status", "updated_at"])
    return booking


@transaction.atomic
def update_booking(booking, *, title=None, start=None, end=None, guests=None, conference=None):
    """Retitle, reschedule, change the guests (their answers kept) and/or ask for another video link.
    A cancelled booking cannot change."""
    booking = _lock(booking.pk)
    if booking.status == Booking.Status.CANCELLED:
        raise BookingError("A cancelled booking cannot be changed.", code="invalid_transition")
    if guests is not None:
        booking.guests = _guests(booking.guests, clean_guests(list(guests), booking.user.email))
    booking.title = booking.title if title is None else title
    booking.start = booking.start if start is None else start
    booking.end = booking.end if end is None else end
    booking.conference = booking.conference if conference is None else conference
    _check_times(booking.start, booking.end)
    if start is not None or end is not None:
        _check_bounds(booking.start, booking.end)
    if booking.status == Booking.Status.CONFIRMED:
        _check_free(booking)
    booking.save(update_fields=["title", "start", "end", "guests", "conference", "updated_at"])
    return booking


# Series: one rule, many ordinary Bookings. Every service locks the series' rows, then the workspace
# (the order the single-booking services use), and checks all its occurrences in two queries.


def _clashes(workspace, spans, exclude=()):
    """Indexes of the spans that overlap a confirmed booking of the workspace (other than `exclude`)
    or a busy block of its room calendar — the rule `_check_free` applies to one booking."""
    if not spans:
        return []
    low, high = min(s for s, _ in spans), max(e for _, e in spans)
    taken = list(
        Booking.objects.filter(workspace_id=workspace.pk, status=Booking.Status.CONFIRMED, start__lt=high, end__gt=low)
        .exclude(pk__in=list(exclude))
        .values_list("start", "end")
    )
    taken += [
        (b.start, b.end) for b in calendar_sync.external_busy(calendar_sync.Owner("workspace", workspace.pk), low, high)
    ]
    taken.sort()
    starts = [s for s, _ in taken]
    latest_end = list(accumulate((e for _, e in taken), max))  # latest end among the first k blocks
    clashing = []
    for index, (start, end) in enumerate(spans):
        before = bisect_left(starts, end)  # blocks starting before this span ends
        if before and latest_end[before - 1] > start:
            clashing.append(index)
    return clashing


def _dates(spans, zone):
    return [start.astimezone(ZoneInfo(zone)).date().isoformat() for start, _ in spans]


def _conflict(workspace, dates):
    listed = ", ".join(dates[:10]) + (f" and {len(dates) - 10} more" if len(dates) > 10 else "")
    return SeriesConflict(f"{workspace.name} is already booked on {listed}.", dates)


def _series_bookings(series):
    """The series row and its occurrences, locked (then the workspace), in order."""
    Series.objects.select_for_update().get(pk=series.pk)
    bookings = list(series.bookings.select_for_update().order_by("series_start", "start"))
    Workspace.objects.select_for_update().get(pk=series.workspace_id)
    return bookings


@transaction.atomic
def create_series(*, user, workspace, title, start, end, rule, skip_conflicts=False):
    """The series and one pending Booking per occurrence, or SeriesConflict naming every clashing
    date and nothing created; with `skip_conflicts` the clashing ones are left out and returned.

    Returns (series, skipped dates)."""
    _check_times(start, end)
    try:
        parsed = recurrence.parse(rule)
        starts = recurrence.expand(parsed, start, workspace.time_zone)
    except recurrence.RuleError as exc:
        raise BookingError(str(exc), field="rule") from None
    duration = end - start
    spans = [(s, s + duration) for s in starts]
    _check_bounds(*spans[0])
    _check_bounds(*spans[-1])  # the horizon: the last occurrence is the furthest ahead
    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    clashing = _clashes(workspace, spans)
    skipped = _dates([spans[i] for i in clashing], workspace.time_zone)
    if clashing and (not skip_conflicts or len(clashing) == len(spans)):
        raise _conflict(workspace, skipped)
    zone = ZoneInfo(workspace.time_zone)
    text = parsed.text(zone)  # normalized: a date UNTIL grows to a UTC time
    if len(text) > Series._meta.get_field("rule").max_length:
        raise BookingError("The rule is too long once written out; list each day once.", field="rule")
    series = Series.objects.create(
        user=user,
        workspace=workspace,
        title=title,
        rule=text,
        time_zone=workspace.time_zone,
        start=start,
        local_start=start.astimezone(zone).time().replace(tzinfo=None),
        duration=duration,
    )
    left_out = set(clashing)
    for index, (s, e) in enumerate(spans):
        if index not in left_out:
            Booking.objects.create(
                user=user, workspace=workspace, title=title, start=s, end=e, series=series, series_start=s
            )
    return series, skipped


@transaction.atomic
def confirm_series(series):
    """Confirm every pending occurrence, or none (SeriesConflict naming the dates that clash)."""
    pending = [b for b in _series_bookings(series) if b.status == Booking.Status.PENDING]
    spans = [(b.start, b.end) for b in pending]
    clashing = _clashes(series.workspace, spans)
    if clashing:
        raise _conflict(series.workspace, _dates([spans[i] for i in clashing], series.time_zone))
    for booking in pending:
        booking.status = Booking.Status.CONFIRMED
        booking.save(update_fields=["status", "updated_at"])
    return series


def _future(bookings):
    now = timezone.now()
    return [b for b in bookings if b.start > now and b.status != Booking.Status.CANCELLED]


@transaction.atomic
def update_series(series, *, title=None, start_time=None, end_time=None, start=None, end=None):
    """Retitle and/or move to another time of day every future occurrence (on its own local date).

    The time comes from `start_time`/`end_time` (local) or from `start`/`end`, whose local times
    apply; given a start only, the length stays. Every moved occurrence is checked like a booking
    (bounds; overlaps, whatever its status): a clash is SeriesConflict and nothing changes."""
    future = _future(_series_bookings(series))
    zone = ZoneInfo(series.time_zone)
    duration = series.duration
    if start is not None:
        start_time = start.astimezone(zone).time()
    if start is not None and end is not None:
        duration = end - start
    elif end is not None:
        end_time = end.astimezone(zone).time()
    moving = start_time is not None or end_time is not None
    start_time = (start_time or series.local_start).replace(tzinfo=None)
    if end_time is not None and (start is None or end is None):
        day = datetime(2000, 1, 1)
        duration = datetime.combine(day, end_time.replace(tzinfo=None)) - datetime.combine(day, start_time)
        duration += timedelta(days=1) if duration <= timedelta(0) else timedelta(0)
    if moving:
        spans = []
        for booking in future:
            local = datetime.combine(booking.start.astimezone(zone).date(), start_time)
            new_start = recurrence.localize(local, zone)
            spans.append((new_start, new_start + duration))
            _check_times(*spans[-1])
            _check_bounds(*spans[-1])
        clashing = _clashes(series.workspace, spans, exclude=[b.pk for b in future])
        if clashing:
            raise _conflict(series.workspace, _dates([spans[i] for i in clashing], series.time_zone))
        for booking, (new_start, new_end) in zip(future, spans, strict=True):
            original = datetime.combine(booking.series_start.astimezone(zone).date(), start_time)
            booking.start, booking.end = new_start, new_end
            booking.series_start = recurrence.localize(original, zone)
        series.local_start, series.duration = start_time, duration
    if title is not None:
        series.title = title
        for booking in future:
            booking.title = title
    if not moving and title is None:
        return series
    for booking in future:
        booking.save(update_fields=["title", "start", "end", "series_start", "updated_at"])
    series.save(update_fields=["title", "local_start", "duration", "updated_at"])
    return series


@transaction.atomic
def cancel_series(series, *, from_booking=None):
    """Cancel every future occurrence, or `from_booking` and every occurrence after it in the series."""
    bookings = _series_bookings(series)
    if from_booking is None:
        chosen = _future(bookings)
    else:
        if from_booking.series_id != series.pk:
            raise BookingError("That booking is not an occurrence of this series.", field="from")
        chosen = [b for b in bookings if b.series_start >= from_booking.series_start]
    for booking in chosen:
        if booking.status != Booking.Status.CANCELLED:
            booking.status = Booking.Status.CANCELLED
            booking.save(update_fields=["status", "updated_at"])
    return series
