"""The iCal fallback: a private RFC 5545 feed of a member's upcoming events, for any calendar app.

`render` builds the feed and keeps the feed's revision (`content_hash`, `content_changed_at`)
up to date; `feed_view` serves it with Django's conditional-request machinery, so weak and
listed `If-None-Match` values, `*` and `If-Modified-Since` all answer 304.

The occurrences of a recurring series (`EventSource.series`) are one VEVENT with the series' RRULE in
its zone (with a VTIMEZONE), EXDATE for every occurrence the feed does not hold (cancelled, past or
gone) and a RECURRENCE-ID override for each one moved or changed; the rule ends at the last one held.
"""

import hashlib
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import wraps
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import connections
from django.http import Http404, HttpResponse
from django.http.response import ResponseHeaders
from django.utils import timezone
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import condition, require_safe
from icalendar import Calendar, Timezone, vDuration, vRecur
from icalendar import Event as VEvent

from .models import CalendarFeed, SyncRecord
from .owners import Owner
from .providers.base import BaseProvider
from .series import MAX_INSTANCES, expand
from .sources import get_sources
from .types import Event, SeriesInfo

PRODID = "-//ManageHub//calendar_sync//EN"
#: How often calendar apps should poll (RFC 7986 REFRESH-INTERVAL, and the X-PUBLISHED-TTL most apps read).
REFRESH_INTERVAL = timedelta(minutes=15)
#: How long a fetched copy may be reused without asking (private: the URL is a credential).
MAX_AGE = 300
UID_SUFFIX = "@calendar-sync"


def render(feed):
    """The ics body of a CalendarFeed (`user_id`, `content_hash`, `content_changed_at` loaded).

        Records a content change on `feed` (one UPDATE, only when the body differs from the last
        render). Queries per source: one for the events, one for their sync records (and one for their
    video meetings when any asks for one).
    """
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", "ManageHub bookings")
    cal.add("refresh-interval", vDuration(REFRESH_INTERVAL), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", vDuration(REFRESH_INTERVAL))
    undated: list[VEvent] = []  # events whose source can't tell when they changed
    for source in get_sources().values():
        objects = list(
            source.get_queryset().filter(pk__in=source.upcoming(Owner.member(feed.user_id)).values("pk")).order_by("pk")
        )
        versions = _versions(source, objects)
        # key: (SeriesInfo, [(obj, event, original start)]) — one VEVENT per series
        series: dict[str, tuple[SeriesInfo, list[tuple[Any, Event, datetime]]]] = {}
        links = None  # read once, only when an event asks for a video meeting
        for obj in objects:
            event = source.event(obj)
            if event.conference not in ("", "none") and not event.join_url and links is None:
                links = _join_urls(source, objects)
            join_url = event.join_url or (links or {}).get(str(obj.pk), "")
            if join_url:  # the object's one video meeting, wherever it was made (RFC 7986 CONFERENCE too)
                event = replace(event, join_url=join_url)
            info = event.series or source.series(obj)
            if info is not None:
                series.setdefault(info.key, (info, []))[1].append((obj, event, info.original_start))
                continue
            # The UID is stable: clients update, never duplicate.
            cal.add_component(_vevent(source, obj, event, versions, undated, f"{source.event_id(obj.pk)}{UID_SUFFIX}"))
        for key in sorted(series):
            info, occurrences = series[key]
            for item in _series_vevents(source, info, occurrences, versions, undated):
                cal.add_component(item)
    _add_timezones(cal)
    body = cal.to_ical()
    digest = hashlib.sha256(body).hexdigest()
    if digest != feed.content_hash or feed.content_changed_at is None:
        now = timezone.now().replace(microsecond=0)  # HTTP dates have whole seconds
        CalendarFeed.objects.filter(pk=feed.pk).update(content_hash=digest, content_changed_at=now)
        feed.content_hash, feed.content_changed_at = digest, now
    if not undated:
        return body
    # Stamped after hashing: the stamp follows the content, it is not part of it.
    for item in undated:
        _stamp(item, feed.content_changed_at)
    return cal.to_ical()


def _vevent(source, obj, event, versions, undated, uid, zone=UTC):
    """The VEVENT of one object: times in `zone` (UTC, or a series' zone with TZID)."""
    item = VEvent()
    item.add("uid", uid)
    item.add("dtstart", event.start.astimezone(zone))
    item.add("dtend", event.end.astimezone(zone))
    item.add("summary", event.summary)
    if event.location:
        item.add("location", event.location)
    if event.description or event.join_url:
        item.add("description", BaseProvider.event_text(event))
    if event.join_url:
        item.add("conference", event.join_url, parameters={"VALUE": "URI", "FEATURE": "VIDEO"})
    item.add("status", "CONFIRMED")
    # Revisions so far: the sync record's version starts at 1 and grows with each change.
    item.add("sequence", max(versions.get(str(obj.pk), 1) - 1, 0))
    modified = source.modified(obj)
    if modified is None:
        undated.append(item)
    else:
        _stamp(item, modified)
    return item


def _series_vevents(source, info, occurrences, versions, undated):
    """One recurring VEVENT for a series' occurrences in the feed, and its RECURRENCE-ID overrides.

    The rule is expanded in the series' zone (wall-clock: 09:00 stays 09:00) and matched to the
    occurrences by their original start: a rule start without one is an EXDATE, the rule ends
    (UNTIL) at the last one held, and one whose times, title or place differ from the rest is an
    override. The description is the first usual occurrence's.
    An occurrence the rule does not make (or that it cannot read) stays a single event.
    """
    try:
        zone = ZoneInfo(info.time_zone)
        first = info.start.astimezone(zone)
        rule = vRecur.from_ical(info.rule)
        starts = [start.astimezone(zone) for start in expand(info.rule, info.start, info.time_zone)]
    except (ValueError, TypeError, KeyError, ZoneInfoNotFoundError):
        starts = []  # nothing matches: every occurrence stays a single event
    held, singles = {}, []  # {original start (UTC): (obj, event)}; the rest are single events
    for obj, event, original in occurrences:
        if original.astimezone(UTC) in held:
            singles.append((obj, event))  # two objects claim one occurrence: neither is lost
        else:
            held[original.astimezone(UTC)] = (obj, event)
    matched = {start: held.pop(start.astimezone(UTC)) for start in starts if start.astimezone(UTC) in held}
    singles += [held[key] for key in sorted(held)]
    items = [
        _vevent(source, obj, event, versions, undated, f"{source.event_id(obj.pk)}{UID_SUFFIX}")
        for obj, event in singles
    ]
    if not matched:
        return items
    length, last = info.end - info.start, max(matched)
    usual = [event for start, (_, event) in matched.items() if event.start == start and event.end - start == length]
    typical = usual[0] if usual else next(iter(matched.values()))[1]
    uid = f"{source.event_id(f'series:{info.key}')}{UID_SUFFIX}"
    master = VEvent()
    master.add("uid", uid)
    master.add("dtstart", first)
    master.add("dtend", first + length)
    if last != starts[-1] or len(starts) == MAX_INSTANCES:  # it ends earlier than the rule says
        rule.pop("COUNT", None)
        rule["UNTIL"] = [last.astimezone(UTC)]
    master.add("rrule", rule)
    missing = [start for start in starts if start <= last and start not in matched]
    if missing:
        master.add("exdate", missing)
    master.add("summary", typical.summary)
    if typical.location:
        master.add("location", typical.location)
    if typical.description:
        master.add("description", typical.description)
    master.add("status", "CONFIRMED")
    objs = [obj for obj, _ in matched.values()]
    master.add("sequence", max(max(versions.get(str(obj.pk), 1) - 1, 0) for obj in objs))
    modified = [source.modified(obj) for obj in objs]
    if None in modified:
        undated.append(master)
    else:
        _stamp(master, max(modified))
    items.insert(0, master)
    for start, (obj, event) in matched.items():
        # Not the description: a host may link each occurrence to its own page; that alone is no exception.
        same = (event.summary, event.location) == (typical.summary, typical.location)
        if same and event.start == start and event.end - event.start == length:
            continue
        item = _vevent(source, obj, event, versions, undated, uid, zone)
        item.add("recurrence-id", start)
        items.append(item)
    return items


def _add_timezones(cal):
    """A VTIMEZONE for every zone a TZID names (RFC 5545 §3.6.5), covering the feed's years."""
    missing = cal.get_missing_tzids()
    if not missing:
        return
    years = [
        moment.dt.year
        for item in cal.walk("VEVENT")
        for name in ("DTSTART", "DTEND", "RECURRENCE-ID")
        if (moment := item.get(name)) is not None
    ]
    first, last = date(min(years) - 1, 1, 1), date(max(years) + 2, 1, 1)
    for tzid in sorted(missing, reverse=True):
        try:
            zone = Timezone.from_tzid(tzid, first_date=first, last_date=last)
        except (ValueError, KeyError, ZoneInfoNotFoundError):
            continue
        cal.subcomponents.insert(0, zone)  # before the events that name it


def _stamp(item, modified):
    """DTSTAMP is the revision time (RFC 5545 §3.8.7.2 for a published feed), not the request time."""
    modified = modified.astimezone(UTC).replace(microsecond=0)
    item.add("dtstamp", modified)
    item.add("last-modified", modified)


def _versions(source, objects):
    """{object_id: sync record version} of these objects: one query (per parameter-limit batch)."""
    ids = [str(obj.pk) for obj in objects]
    if not ids:
        return {}
    records = SyncRecord.objects.filter(source=source.key, destination="member")
    batch = (connections[records.db].features.max_query_params or len(ids) + 1) - 1
    versions = {}
    for start in range(0, len(ids), batch):
        chunk = records.filter(object_id__in=ids[start : start + batch])
        versions.update(chunk.values_list("object_id", "version"))
    return versions


def _join_urls(source, objects):
    """{object_id: join link} of the video meetings these objects' copies have: one query."""
    ids = [str(obj.pk) for obj in objects]
    if not ids:
        return {}
    rows = SyncRecord.objects.filter(source=source.key, written__conference__status="ready")
    batch = (connections[rows.db].features.max_query_params or len(ids) + 1) - 1
    links: dict[str, str] = {}
    for start in range(0, len(ids), batch):
        chunk = rows.filter(object_id__in=ids[start : start + batch])
        for object_id, written in chunk.values_list("object_id", "written"):
            links.setdefault(object_id, (written.get("conference") or {}).get("join_url") or "")
    return {k: v for k, v in links.items() if v}


# --- HTTP ------------------------------------------------------------------------------------

_CACHE_ATTR = "_calendar_sync_feed"


def _rendered(request, secret):
    """(feed, body) for this request: looked up and rendered once, whoever asks first
    (the ETag, the Last-Modified or the view)."""
    cached = getattr(request, _CACHE_ATTR, None)
    if cached is None or cached[0] != secret:
        feed = (
            CalendarFeed.objects.filter(secret_hash=CalendarFeed.hash(secret))
            .only("pk", "user_id", "content_hash", "content_changed_at")
            .first()
        )
        if feed is None:
            raise Http404("No such calendar feed.")
        cached = (secret, feed, render(feed))
        setattr(request, _CACHE_ATTR, cached)
    return cached[1], cached[2]


def _etag(request, secret):
    return f'"{_rendered(request, secret)[0].content_hash}"'


def _last_modified(request, secret):
    return _rendered(request, secret)[0].content_changed_at


class _NotModifiedHeaders(ResponseHeaders):
    """Headers of a 304 that refuse a Content-Length.

    RFC 9110 §8.6: a 304 may only carry the length the 200 would have; CommonMiddleware
    adds `Content-Length: 0` to every non-streaming response, which is wrong here.
    """

    def __setitem__(self, key, value):
        if key.lower() != "content-length":
            super().__setitem__(key, value)


def _no_length_on_304(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        if response.status_code == 304:
            response.headers = _NotModifiedHeaders(response.headers)  # drops one already set, too
        return response

    return wrapper


@csrf_exempt  # no session or form behind it: a POST is the 405 of require_safe, not a CSRF 403
@require_safe
@_no_length_on_304
@cache_control(private=True, max_age=MAX_AGE)
@condition(etag_func=_etag, last_modified_func=_last_modified)
def feed_view(request, secret):
    """The .ics itself: no login (calendar apps can't), the unguessable secret is the credential."""
    _, body = _rendered(request, secret)
    response = HttpResponse(body, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = 'inline; filename="managehub.ics"'
    return response
