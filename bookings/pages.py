"""Server-rendered pages (JavaScript over the REST API): the member's Integrations → Calendar page,
and staff's Integrations → Room calendars page.

The member's bookings list is rendered here, with plain forms for Confirm and a confirmation step for
Cancel, so it says the same thing and works the same way with JavaScript off. So are repeating
bookings: "Repeat" on the booking form, Confirm for a whole series, and "this one / this and
following / all" on Cancel and Move — all through `services`, as the REST API. A booking is a
meeting too: guests and a video link on the form (only the links the member's calendar can make
now), and each guest's answer and the join link on the booking's row."""

import datetime as dt
import re
import zoneinfo

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_http_methods, require_POST

from calendar_sync import api as calendar_sync

from . import recurrence, repeat, services
from .models import Booking, Series, Workspace

#: What the "In your calendar" column says, by state (see `_in_calendar`).
IN_CALENDAR = {
    "synced": "✓ In your calendar",
    "pending": "Syncing…",
    "removing": "Removing from your calendar…",
    "removed": "Not in your calendar",
    "failed": "Failed",
    "not_connected": "Not connected",
    "needs_reauth": "Reconnect needed",
    "unconfirmed": "Added once confirmed",
}


def _in_calendar(booking, state, connection):
    """The booking's real place in the member's calendar, from its member sync state (or None) and
    the member's connection: only a confirmed booking whose event exists, over a live connection,
    is "in your calendar" (a cancelled one, or any after a disconnect, never is)."""
    if not connection["connected"]:
        return "not_connected"
    if connection["status"] != "active":
        return "needs_reauth"
    sync = state["state"] if state else None
    if sync in ("failed", "not_connected"):
        return sync
    if booking.status == Booking.Status.CONFIRMED:
        return "synced" if sync == "synced" and state["event_id"] else "pending"
    if sync == "pending" and state["event_id"]:
        return "removing"
    return "unconfirmed" if booking.status == Booking.Status.PENDING else "removed"


#: A guest's answer as the page says it (the calendars' `needsAction` is "invited").
RESPONSES = {"needsAction": "invited", "accepted": "accepted", "declined": "declined", "tentative": "tentative"}
#: The video links a booking can have, by type, as the form and the rows name them.
VIDEO_NAMES = {"google_meet": "Google Meet", "teams": "Microsoft Teams"}


def _guests(booking):
    """The booking's guests, each with their answer in words."""
    stored = booking.guests if isinstance(booking.guests, list) else []
    return [
        {"email": str(g["email"]), "response": RESPONSES.get(str(g.get("response") or "needsAction"), "invited")}
        for g in stored
        if isinstance(g, dict) and g.get("email")
    ]


def _answers(guests):
    """ "3 guests: 1 accepted, 2 invited" (answers in a fixed order)."""
    counts = {word: sum(g["response"] == word for g in guests) for word in RESPONSES.values()}
    said = ", ".join(f"{n} {word}" for word, n in counts.items() if n)
    return f"{len(guests)} {'guest' if len(guests) == 1 else 'guests'}: {said}"


def _meeting(booking):
    """What the page shows of the booking as a meeting: its guests and answers, and its video link."""
    guests = _guests(booking)
    return {"guests": guests, "answers": _answers(guests) if guests else "", "video": _video_link(booking)}


def _video_link(booking):
    """The booking's video link as its row says it: ready (a web link to join), pending, made once
    confirmed (or once in a calendar), or failed with the calendar's reason; None when none was asked
    for (or the booking is cancelled: its meeting went with the event)."""
    info = booking.conference_info if isinstance(booking.conference_info, dict) else {}
    status = info.get("status") or "none"
    requested = booking.conference or Booking.Conference.NONE
    if booking.status == Booking.Status.CANCELLED or (requested == Booking.Conference.NONE and status == "none"):
        return None
    name = VIDEO_NAMES.get(str(info.get("type") or requested), "Video link")
    url = str(info.get("join_url") or "")
    if status == "ready" and url.startswith("https://"):  # never another scheme (javascript:, data:…) in a link
        return {"state": "ready", "name": name, "url": url}
    if status in ("failed", "ready"):
        reason = str(info.get("reason") or "") if status == "failed" else "the calendar gave no web link."
        return {"state": "failed", "text": f"No video link: {reason or 'the calendar could not make one.'}"}
    if status == "pending":  # being made: the list is fetched again until it is ready or failed
        return {"state": "pending", "text": f"{name}: pending…"}
    if booking.status == Booking.Status.PENDING:
        return {"state": "unconfirmed", "text": f"{name}: made once confirmed"}
    return {"state": "waiting", "text": f"{name}: made once the booking is in a calendar"}


def _series_words(bookings):
    """Each series' rule in words, once per series (by id)."""
    return {b.series_id: repeat.words(b.series) for b in bookings if b.series_id}


def _rows(user, errors):
    bookings = list(
        Booking.objects.filter(user=user, end__gt=timezone.now())
        .select_related("workspace", "series")
        .order_by("start", "pk")
    )
    words = _series_words(bookings)
    states = calendar_sync.sync_states("booking", bookings)
    connection = calendar_sync.connection(calendar_sync.Owner.member(user))
    rows = []
    for booking in bookings:
        state = (states.get(str(booking.pk)) or {}).get("member")
        key = _in_calendar(booking, state, connection)
        error = state["last_error"] if state and key == "failed" else ""
        rows.append(
            {
                "booking": booking,
                "when": services.when(booking.start, booking.end, booking.workspace.time_zone),
                "repeats": words.get(booking.series_id, ""),
                "sync_state": key,
                "in_calendar": IN_CALENDAR[key] + (f" — {error}" if error else ""),
                "error": errors.get(str(booking.pk)),  # what went wrong with the last action on it
                **_meeting(booking),
            }
        )
    return rows


#: How a connection's provider is named on its card (a provider this host does not know shows its key).
PROVIDER_LABELS = {
    "google": "Google Calendar",
    "microsoft": "Outlook Calendar",
    "caldav": "CalDAV calendar",
    "ics": "ICS link",
}
#: The longest week window the page's script asks bookings for (a week, with room for a time change).
WEEK_MAX_DAYS = 8


def _connections(user):
    """The member's connections for their cards (never a secret: `calendar_sync.api.connections` has none)."""
    rows = calendar_sync.connections(calendar_sync.Owner.member(user))
    return [{**row, "label": PROVIDER_LABELS.get(row["provider"], row["provider"])} for row in rows]


def _week(request):
    """The member's bookings (not cancelled) overlapping [start, end), as JSON for the week view; an
    occurrence of a series also has `series` (its id, title and rule in words), a meeting its
    `guests` and `video` (`_week_meeting`)."""
    try:  # a well-formed but impossible time (month 13, an offset past year 1 or 9999) is a ValueError/OverflowError
        start, end = (parse_datetime(request.GET.get(k) or "") for k in ("start", "end"))
        if not start or not end or timezone.is_naive(start) or timezone.is_naive(end):
            raise ValueError
        start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return JsonResponse({"code": "invalid", "detail": "start and end: ISO 8601 times with an offset."}, status=400)
    if not dt.timedelta(0) < end - start <= dt.timedelta(days=WEEK_MAX_DAYS):
        return JsonResponse(
            {"code": "invalid", "detail": f"end: after start, within {WEEK_MAX_DAYS} days."}, status=400
        )
    bookings = (
        Booking.objects.filter(user=request.user, start__lt=end, end__gt=start)
        .exclude(status=Booking.Status.CANCELLED)
        .select_related("workspace", "series")
        .order_by("start", "pk")
    )
    words = _series_words(bookings)
    return JsonResponse(
        {
            "bookings": [
                {
                    "id": str(b.pk),
                    "title": b.title,
                    "workspace": b.workspace.name,
                    "start": b.start.isoformat(),
                    "end": b.end.isoformat(),
                    "status": b.status,
                    **(
                        {"series": {"id": str(b.series_id), "title": b.series.title, "rule": words[b.series_id]}}
                        if b.series_id
                        else {}
                    ),
                    **_week_meeting(b),
                }
                for b in bookings
            ]
        }
    )


def _week_meeting(booking):
    """A week block's meeting, when it is one: `guests` ("2 guests: 1 accepted, 1 invited") and
    `video` (`url` and `name` when it is ready, else `text`), as the booking's row says them."""
    meeting = _meeting(booking)
    shown = {"guests": meeting["answers"]} if meeting["answers"] else {}
    return shown | ({"video": meeting["video"]} if meeting["video"] else {})


PARTS = {  # pieces of the page alone, for its script to refresh them
    "bookings": lambda request: render(request, "bookings/_bookings.html", {"rows": _rows(request.user, {})}),
    "connections": lambda request: render(
        request, "bookings/_connections.html", {"connections": _connections(request.user)}
    ),
    "week": _week,
}


@login_required
@ensure_csrf_cookie
def calendar_integration(request):
    part = PARTS.get(request.GET.get("part", ""))
    if part:
        return part(request)
    row_errors, series_errors, notes = {}, {}, []
    for message in messages.get_messages(request):
        if message.extra_tags.startswith("booking-"):
            row_errors[message.extra_tags.removeprefix("booking-")] = message.message
        elif message.extra_tags.startswith("series-"):
            series_errors[message.extra_tags.removeprefix("series-")] = message.message
        else:
            notes.append(message)
    connections = _connections(request.user)
    refused = request.session.pop(FORM_KEY, None) or {}  # the booking form, refused: its errors and values
    context = {
        "sandbox": settings.CALENDAR_SYNC_SANDBOX,
        "rows": _rows(request.user, row_errors),
        "series_rows": _series_rows(request.user, series_errors),
        "notes": notes,
        "connections": connections,
        "video": _video(request.user, connections),
        "max_guests": services.MAX_GUESTS,
        "guests_max_chars": GUESTS_MAX_CHARS,
        "form_errors": refused.get("errors", {}),
        "form_values": refused.get("values", {}),
        "workspaces": Workspace.objects.order_by("name"),
        "days": DAY_CHOICES,
        "max_interval": recurrence.MAX_INTERVAL,
        "max_occurrences": recurrence.MAX_OCCURRENCES,
    }
    return render(request, "bookings/integrations_calendar.html", context)


def _series_rows(user, errors):
    """The member's series with an upcoming occurrence: rule in words, how many upcoming and how many
    of them pending, and the next occurrence (its cancel page offers "all")."""
    upcoming = Q(bookings__end__gt=timezone.now()) & ~Q(bookings__status=Booking.Status.CANCELLED)
    following = (
        Booking.objects.filter(series=OuterRef("pk"), end__gt=timezone.now())
        .exclude(status=Booking.Status.CANCELLED)
        .order_by("start")
    )
    series = (
        Series.objects.filter(user=user)
        .select_related("workspace")
        .annotate(
            upcoming=Count("bookings", filter=upcoming),
            pending=Count("bookings", filter=upcoming & Q(bookings__status=Booking.Status.PENDING)),
            next_id=Subquery(following.values("pk")[:1]),
            next_start=Subquery(following.values("start")[:1]),
        )
        .filter(upcoming__gt=0)
        .order_by("start", "pk")
    )
    return [{"series": s, "words": repeat.words(s), "error": errors.get(str(s.pk))} for s in series]


def _calendar_date(value):
    """A date no calendar (nor a time zone) overflows on: the API's bounds, 1900 to 2999."""
    if value is not None and not 1900 <= value.year <= 2999:
        raise forms.ValidationError("Must be between 1900-01-01 and 2999-12-31.")
    return value


DAY_CHOICES = list(repeat.DAY_NAMES.items())  # (MO, Monday)…
#: The longest guests text the form reads: 50 addresses of up to 254 characters, a name beside each.
GUESTS_MAX_CHARS = 20_000
_NAMED = re.compile(r"[^<>]*<([^<>]*)>")  # "Ada Lovelace <ada@example.com>", as mail programs copy it


def guest_list(text):
    """The addresses in the form's guests text: separated by commas, semicolons or new lines, blanks
    skipped, "Name <address>" read as its address. Checked by `services.clean_guests`, as the API's."""
    entries = (entry.strip() for entry in re.split(r"[,;\r\n]+", text))
    return [(named.group(1).strip() if (named := _NAMED.fullmatch(e)) else e) for e in entries if e]


class BookingForm(forms.Form):
    """The page's booking form. `zone` is the browser's time zone, set by the page's script.

    "Repeat" (weekly) makes it a series: on `days` (none: the date's own weekday), every `interval`
    weeks, ending after `count` times or on `until` (`ends` says which)."""

    workspace = forms.ModelChoiceField(Workspace.objects.all())
    title = forms.CharField(max_length=200)
    date = forms.DateField()
    start = forms.TimeField()
    end = forms.TimeField()
    zone = forms.CharField(required=False, max_length=64)
    repeat = forms.ChoiceField(choices=[("", "Does not repeat"), ("weekly", "Weekly")], required=False)
    days = forms.MultipleChoiceField(choices=DAY_CHOICES, required=False)
    interval = forms.IntegerField(min_value=1, max_value=recurrence.MAX_INTERVAL, required=False)
    ends = forms.ChoiceField(choices=[("count", "After"), ("until", "On")], required=False)
    count = forms.IntegerField(min_value=1, max_value=9999, required=False)
    until = forms.DateField(required=False)
    skip_conflicts = forms.BooleanField(required=False)
    guests = forms.CharField(
        required=False,
        max_length=GUESTS_MAX_CHARS,
        strip=False,
        error_messages={"max_length": f"Too long: at most {services.MAX_GUESTS} e-mail addresses."},
    )
    conference = forms.ChoiceField(choices=Booking.Conference.choices, required=False)

    def clean_guests(self):
        return guest_list(self.cleaned_data["guests"])

    def clean_date(self):
        return _calendar_date(self.cleaned_data["date"])

    def clean_until(self):
        return _calendar_date(self.cleaned_data["until"])

    def clean(self):
        data = super().clean()
        if data.get("repeat") == "weekly":
            ends = data.get("ends") or "count"
            if ends == "count" and data.get("count") is None:
                self.add_error("count", "How many times: a number.")
            if ends == "until" and data.get("until") is None:
                self.add_error("until", "The last date, or choose “after … times”.")
            data["ends"] = ends
        return data


@login_required
@require_POST
def new_booking(request):
    """The booking form without JavaScript, and with "Repeat" always (without it, the page's script posts
    to the bookings API instead): the times are read in the browser's zone when the script named it,
    else in the workspace's. A series clashing with other bookings gets a page of its own naming the
    dates, from which the member books the other dates. Refused: nothing is saved, and the form comes
    back with what was typed and each error next to its field."""
    form = BookingForm(request.POST)
    if not form.is_valid():
        errors = {k: " ".join(v) for k, v in form.errors.items()}
        return _not_booked(request, "; ".join(f"{k}: {v}" for k, v in errors.items()), errors)
    data = form.cleaned_data
    zone = data["zone"] if data["zone"] in zoneinfo.available_timezones() else data["workspace"].time_zone
    conference = data["conference"] or Booking.Conference.NONE
    if conference not in dict(_video(request.user)["choices"]):  # only what the member's calendar can make now
        return _not_booked(request, "Choose a video link your calendar can make.", {"conference": VIDEO_REFUSED})
    if data["repeat"] == "weekly":
        if data["guests"] or conference != Booking.Conference.NONE:  # `services.create_series` takes neither
            field = "guests" if data["guests"] else "conference"
            return _not_booked(request, SERIES_MEETING, {field: SERIES_MEETING})
        return _new_series(request, data, zone)
    start, end = (dt.datetime.combine(data["date"], data[k], zoneinfo.ZoneInfo(zone)) for k in ("start", "end"))
    try:
        booking = services.create_booking(
            user=request.user,
            workspace=data["workspace"],
            title=data["title"],
            start=start,
            end=end,
            guests=data["guests"],
            conference=conference,
        )
    except services.BookingError as exc:
        return _not_booked(request, str(exc), {exc.field or "form": str(exc)})
    messages.success(request, f"Booked “{booking.title}” ({zone} time): confirm it below.")
    return _back_to(booking)


#: Where a refused booking form's errors and values wait for the page (read once).
FORM_KEY = "bookings.booking_form"
#: What a refused form shows again, each at most this long (guests: their field's own bound).
KEPT = {"workspace": 64, "title": 200, "date": 32, "start": 16, "end": 16, "guests": GUESTS_MAX_CHARS, "conference": 16}
VIDEO_REFUSED = "Choose one of the video links offered: your calendar can't make that one now."
SERIES_MEETING = (
    "A repeating booking can't have guests or a video link yet: book one date with them, or repeat without."
)


def _not_booked(request, said, errors):
    """Back to the form: why in the page's outcome line, and next to each field (`errors`, by field),
    with what was typed (bounded) in the fields again."""
    messages.error(request, f"Not booked: {said}")
    values = {k: request.POST.get(k, "")[:limit] for k, limit in KEPT.items()}
    request.session[FORM_KEY] = {"errors": {k: v[:500] for k, v in errors.items()}, "values": values}
    return redirect(f"{reverse('calendar-integration')}#book")


def _video(user, connections=None):
    """The video links the booking form offers: "No video link" always, then each one the member's
    calendar can make now (`calendar_sync.api.capabilities`); when none, why, in a sentence."""
    owner = calendar_sync.Owner.member(user)
    types = [t for t in calendar_sync.capabilities(owner)["conference"] if t in VIDEO_NAMES]
    choices = [(Booking.Conference.NONE.value, "No video link"), *((t, VIDEO_NAMES[t]) for t in types)]
    if types:
        return {"choices": choices, "why": ""}
    rows = calendar_sync.connections(owner) if connections is None else connections
    write = next((row for row in rows if row["write"]), None)
    return {"choices": choices, "why": _no_video(write)}


def _no_video(write):
    """Why the member's calendar can make no video link (`write`: their write connection, or None)."""
    if write is None:
        return "Connect Google Calendar or a Microsoft 365 work or school calendar to add a video link."
    if write["status"] != "active":
        return "Reconnect your calendar to add a video link."
    if write["provider"] == "google":
        return "Google Meet is not allowed on this calendar (a Google Workspace administrator may have turned it off)."
    if write["provider"] == "microsoft":
        return (
            "Teams meetings need a Microsoft 365 work or school calendar: personal Microsoft accounts can't make them."
        )
    return f"Your {PROVIDER_LABELS.get(write['provider'], 'calendar')} can't make video links."


def _new_series(request, data, zone):
    workspace = data["workspace"]
    start, end, rule = repeat.weekly(
        date=data["date"],
        start=data["start"],
        end=data["end"],
        zone=zone,
        workspace_zone=workspace.time_zone,
        days=data["days"],
        interval=data["interval"] or 1,
        count=data["count"] if data["ends"] == "count" else None,
        until=data["until"] if data["ends"] == "until" else None,
    )
    try:
        series, skipped = services.create_series(
            user=request.user,
            workspace=workspace,
            title=data["title"],
            start=start,
            end=end,
            rule=rule,
            skip_conflicts=data["skip_conflicts"],
        )
    except services.SeriesConflict as exc:
        resend = [(k, v) for k, values in request.POST.lists() for v in values if k not in IGNORED_FIELDS]
        context = {
            "workspace": workspace,
            "detail": str(exc),
            "dates": [_day(date) for date in exc.dates],
            "resend": resend,
            "skipped_already": data["skip_conflicts"],  # then every date clashes: nothing left to book
        }
        return render(request, "bookings/series_conflict.html", context, status=409)
    except services.BookingError as exc:
        messages.error(request, f"Not booked: {exc}")
        return redirect(f"{reverse('calendar-integration')}#book")
    count = series.bookings.count()
    words = repeat.words(series)
    note = f"Booked “{series.title}”, {words[:1].lower()}{words[1:]}: {count} {'date' if count == 1 else 'dates'}"
    if skipped:
        note += f", leaving out {', '.join(_day(date) for date in skipped)}"
    messages.success(request, note + f" ({zone} time). Confirm them below, all at once or one by one.")
    return redirect(f"{reverse('calendar-integration')}#series-{series.pk}")


#: Fields of a refused series that its "book the other dates" form does not send again.
IGNORED_FIELDS = {"csrfmiddlewaretoken", "skip_conflicts"}


def _day(iso_date):
    """ "2026-12-07" as "Mon 7 Dec 2026"."""
    day = dt.date.fromisoformat(iso_date)
    return f"{day:%a} {day.day} {day:%b %Y}"


def _back_to(booking):
    return redirect(f"{reverse('calendar-integration')}#booking-{booking.pk}")


@login_required
@require_POST
def confirm_booking(request, pk):
    booking = get_object_or_404(Booking, pk=pk, user=request.user)
    try:
        services.confirm_booking(booking)
    except services.BookingError as exc:  # shown next to its row
        messages.error(request, str(exc), extra_tags=f"booking-{booking.pk}")
    return _back_to(booking)


@login_required
@require_POST
def confirm_series(request, pk):
    """Every pending occurrence at once, or none: a clash is said by the series, naming the dates."""
    series = get_object_or_404(Series, pk=pk, user=request.user)
    try:
        services.confirm_series(series)
    except services.BookingError as exc:
        messages.error(request, f"Not confirmed: {exc}", extra_tags=f"series-{series.pk}")
    else:
        messages.success(request, f"Confirmed every date of “{series.title}”.")
    return redirect(f"{reverse('calendar-integration')}#series-{series.pk}")


#: "This one / this and following / all" of a series, as the cancel page offers them.
CANCEL_SCOPES = {
    "one": "Only this one",
    "following": "This one and every later one in the series",
    "all": "Every upcoming one in the series",
}
#: And as the move page offers them: a series changes its time of day as a whole (see README).
MOVE_SCOPES = {
    "one": "Only this one (to another date or time)",
    "all": "Every upcoming one in the series (to another time of day, each on its own date)",
}


def _occurrence(request, pk):
    """The member's booking and, if it is an occurrence of one of their series, the series (else None)."""
    booking = get_object_or_404(Booking.objects.select_related("workspace", "series"), pk=pk, user=request.user)
    series = booking.series if booking.series and booking.series.user_id == request.user.pk else None
    return booking, series


def _scope(request, series, scopes):
    """The scope asked for: "one" for a booking on its own; None when it is not one offered."""
    scope = request.POST.get("scope", request.GET.get("scope", "one")) or "one"
    return scope if scope == "one" or (series and scope in scopes) else None


@login_required
@require_http_methods(["GET", "POST"])
def cancel_booking(request, pk):
    """GET asks "are you sure?" (a page of its own: it works without JavaScript); POST cancels. For an
    occurrence of a series it asks which: this one, this and the following ones, or all upcoming ones."""
    booking, series = _occurrence(request, pk)
    scope = _scope(request, series, CANCEL_SCOPES)
    if request.method == "GET" or scope is None:
        context = {
            "booking": booking,
            "when": services.when(booking.start, booking.end, booking.workspace.time_zone),
            **_meeting(booking),
            "series": series,
            "repeats": repeat.words(series) if series else "",
            "scopes": CANCEL_SCOPES,
            "scope": scope or "one",
            "error": "" if scope else "Choose one of the options.",
        }
        return render(request, "bookings/cancel_booking.html", context, status=200 if scope else 400)
    if scope == "one":
        services.cancel_booking(booking)
        messages.success(request, f"Cancelled “{booking.title}”.")
    else:
        services.cancel_series(series, from_booking=booking if scope == "following" else None)
        which = "from " + _day(booking.start.astimezone(zoneinfo.ZoneInfo(series.time_zone)).date().isoformat())
        messages.success(
            request, f"Cancelled “{series.title}” {which if scope == 'following' else 'on every date ahead'}."
        )
    return _back_to(booking)


class MoveForm(forms.Form):
    """Where to: times in the workspace's zone (the page says so); `date` only for "this one"."""

    date = forms.DateField(required=False)
    start = forms.TimeField()
    end = forms.TimeField()

    def clean_date(self):
        return _calendar_date(self.cleaned_data["date"])


@login_required
@require_http_methods(["GET", "POST"])
def move_booking(request, pk):
    """GET shows where the booking is; POST moves it (`services.update_booking`) or, for "all", gives
    its series another time of day (`services.update_series`). Errors are said on the page (400, or
    409 for an overlap) and nothing changes."""
    booking, series = _occurrence(request, pk)
    zone = zoneinfo.ZoneInfo(booking.workspace.time_zone)
    start, end = booking.start.astimezone(zone), booking.end.astimezone(zone)
    scope = _scope(request, series, MOVE_SCOPES)
    form = MoveForm(request.POST or None)
    shown = {"date": start.date().isoformat(), "start": f"{start:%H:%M}", "end": f"{end:%H:%M}"}
    error, status = "", 200
    if request.method == "POST":
        try:
            if scope is None:
                raise services.BookingError("Choose one of the options.")
            if not form.is_valid():
                raise services.BookingError("; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()))
            moved = _move(booking, series, scope, form.cleaned_data, zone)
        except services.BookingError as exc:
            error, status = f"Not moved: {exc}", 409 if exc.code == "overlap" else 400
        else:
            messages.success(request, moved)
            return _back_to(booking)
    context = {
        "booking": booking,
        "when": services.when(booking.start, booking.end, booking.workspace.time_zone),
        **_meeting(booking),
        "series": series,
        "repeats": repeat.words(series) if series else "",
        "scopes": MOVE_SCOPES,
        "scope": scope or "one",
        "values": {k: request.POST.get(k, v) for k, v in shown.items()},
        "error": error,
    }
    return render(request, "bookings/move_booking.html", context, status=status)


def _move(booking, series, scope, data, zone):
    """Move, and say what moved."""
    if scope == "all":
        series = services.update_series(series, start_time=data["start"], end_time=data["end"])
        return f"Moved every upcoming date of “{series.title}”: {repeat.words(series)}."
    if data["date"] is None:
        raise services.BookingError("date: the new date of this one.", field="date")
    start, end = (dt.datetime.combine(data["date"], data[k], zone) for k in ("start", "end"))
    booking = services.update_booking(booking, start=start, end=end)
    return f"Moved “{booking.title}” to {services.when(booking.start, booking.end, booking.workspace.time_zone)}."


class GuestsForm(forms.Form):
    """The guests of a booking, as the booking form takes them."""

    guests = BookingForm.base_fields["guests"]

    def clean_guests(self):
        return guest_list(self.cleaned_data["guests"])


@login_required
@require_http_methods(["GET", "POST"])
def booking_guests(request, pk):
    """GET shows the booking's guests, one per line; POST sets them (`services.update_booking`: a
    guest kept keeps their answer, and the calendar tells those added or removed). Refused: said on
    the page with what was typed (400, or 409 for a cancelled booking), nothing changes. An occurrence
    of a series is not changed here (a series takes no guests yet)."""
    booking, series = _occurrence(request, pk)
    text = "\n".join(g["email"] for g in _guests(booking))
    error, status = "", 200
    if request.method == "POST":
        form = GuestsForm(request.POST)
        text = request.POST.get("guests", "")[:GUESTS_MAX_CHARS]
        try:
            if series:
                raise services.BookingError(SERIES_MEETING, field="guests")
            if not form.is_valid():
                raise services.BookingError(" ".join(form.errors["guests"]), field="guests")
            booking = services.update_booking(booking, guests=form.cleaned_data["guests"])
        except services.BookingError as exc:
            error, status = f"Not saved: {exc}", 409 if exc.code == "invalid_transition" else 400
        else:
            count = len(booking.guests)
            messages.success(request, f"Saved: “{booking.title}” has {count} {'guest' if count == 1 else 'guests'}.")
            return _back_to(booking)
    context = {
        "booking": booking,
        "when": services.when(booking.start, booking.end, booking.workspace.time_zone),
        **_meeting(booking),
        "series": series,
        "text": text,
        "error": error,
        "max_guests": services.MAX_GUESTS,
        "guests_max_chars": GUESTS_MAX_CHARS,
    }
    return render(request, "bookings/booking_guests.html", context, status=status)


@login_required  # signed out: the site's sign-in page
@staff_member_required  # signed in but not staff: the admin sign-in page ("not authorized to access this page")
@ensure_csrf_cookie
def rooms_integration(request):
    """Staff connect a shared calendar per workspace (a room calendar) that gets every booking of that room."""
    return render(request, "bookings/integrations_rooms.html", {"sandbox": settings.CALENDAR_SYNC_SANDBOX})


def booking_link(request, pk):
    """Deep link from a calendar event back to the booking, on the page above."""
    return redirect(f"/integrations/calendar#booking-{pk}")
