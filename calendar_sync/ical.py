"""The iCal fallback: a private RFC 5545 feed of a member's upcoming events, for any calendar app."""
import hashlib
from datetime import timezone as dt_timezone

from django.db.models import Max
from django.utils import timezone
from icalendar import Calendar, Event as VEvent

from .models import SyncRecord
from .sources import get_sources

PRODID = "-//ManageHub//calendar_sync//EN"


def render(feed):
    """(ics bytes, last-modified) of a CalendarFeed: one query per source for the events."""
    user_id = feed.user_id
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", "ManageHub bookings")
    now = timezone.now()
    for source in get_sources().values():
        for obj in source.get_queryset().filter(pk__in=source.upcoming(user_id).values("pk")).order_by("pk"):
            event = source.event(obj)
            item = VEvent()
            item.add("uid", f"{source.event_id(obj.pk)}@calendar-sync")  # stable: clients update, never duplicate
            item.add("dtstamp", now)
            item.add("dtstart", event.start.astimezone(dt_timezone.utc))
            item.add("dtend", event.end.astimezone(dt_timezone.utc))
            item.add("summary", event.summary)
            if event.location:
                item.add("location", event.location)
            if event.description:
                item.add("description", event.description)
            item.add("status", "CONFIRMED")
            cal.add_component(item)
    changed = SyncRecord.objects.filter(user_id=user_id).aggregate(latest=Max("updated_at"))["latest"]
    return cal.to_ical(), max(changed, feed.created_at) if changed else feed.created_at


def etag(body):
    # DTSTAMP changes on every render; the tag covers everything else.
    stable = b"\n".join(line for line in body.splitlines() if not line.startswith(b"DTSTAMP"))
    return '"' + hashlib.sha256(stable).hexdigest()[:32] + '"'
