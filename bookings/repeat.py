"""The booking form's "Repeat", both ways: what a member chooses (weekly on some days, every N weeks,
until a date or N times) as an RFC 5545 rule for `services.create_series`, and a series' rule as a
sentence for the page. What a rule may be (bounds, expansion, overlaps) stays in `recurrence` and
`services`: nothing here refuses a rule, so the page says exactly what the API says."""

import datetime as dt
from zoneinfo import ZoneInfo

from . import recurrence

DAY_CODES = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # by date.weekday()
DAY_NAMES = {
    "MO": "Monday",
    "TU": "Tuesday",
    "WE": "Wednesday",
    "TH": "Thursday",
    "FR": "Friday",
    "SA": "Saturday",
    "SU": "Sunday",
}
ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last", -2: "second last"}


def weekly(*, date, start, end, zone, workspace_zone, days, interval, count=None, until=None):
    """The first occurrence (aware start and end) and the rule of a weekly series, from the form.

    The member picks dates, days and times in `zone` (their browser's); the rule is expanded in the
    workspace's zone, so its BYDAY and UNTIL are moved by the days between the two (22:00 in New York
    on a Monday is Tuesday in Lisbon). The first occurrence is the first chosen day on or after `date`
    (no day chosen: `date`'s own), as a calendar app reads "weekly on Mon and Thu, from Wednesday"."""
    chosen = [code for code in DAY_CODES if code in set(days)] or [DAY_CODES[date.weekday()]]
    first = next(date + dt.timedelta(days=i) for i in range(7) if DAY_CODES[(date.weekday() + i) % 7] in chosen)
    begin, finish = (dt.datetime.combine(first, t, ZoneInfo(zone)) for t in (start, end))
    shift = (begin.astimezone(ZoneInfo(workspace_zone)).date() - first).days
    byday = sorted((DAY_CODES[(DAY_CODES.index(code) + shift) % 7] for code in chosen), key=DAY_CODES.index)
    parts = ["FREQ=WEEKLY"] + ([f"INTERVAL={interval}"] if interval != 1 else []) + ["BYDAY=" + ",".join(byday)]
    parts.append(f"COUNT={count}" if until is None else f"UNTIL={until + dt.timedelta(days=shift):%Y%m%d}")
    return begin, finish, ";".join(parts)


def _listed(items):
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _every(interval, unit):
    return f"Every {unit}" if interval == 1 else f"Every {interval} {unit}s"


def _day_of_month(day):
    return f"day {day}" if day > 0 else f"the {ORDINALS.get(day, f'{-day}th last')} day"


def _numbered_day(text):
    number, code = (text[:-2], text[-2:]) if len(text) > 2 else ("", text)
    if not number:
        return f"every {DAY_NAMES[code]}"
    return f"the {ORDINALS.get(int(number), number + 'th')} {DAY_NAMES[code]}"


def words(series):
    """The series' rule as people read it: "Every week on Monday and Thursday, 09:00–10:00
    (Europe/Lisbon), 10 times". A rule this page cannot put in words is shown as written."""
    try:
        rule = recurrence.parse(series.rule)
        zone = ZoneInfo(series.time_zone)
        if rule.freq == "DAILY":
            text = _every(rule.interval, "day")
        elif rule.freq == "WEEKLY":
            days = rule.byday or (DAY_CODES[series.start.astimezone(zone).weekday()],)
            text = _every(rule.interval, "week") + " on " + _listed(DAY_NAMES[d] for d in days)
        else:
            on = [_day_of_month(d) for d in rule.bymonthday] + [_numbered_day(d) for d in rule.byday]
            text = _every(rule.interval, "month") + (" on " + _listed(on) if on else "")
        begin = dt.datetime.combine(dt.date(2000, 1, 1), series.local_start)
        text += f", {begin:%H:%M}–{begin + series.duration:%H:%M} ({series.time_zone})"
        if rule.count is not None:
            return text + (", once" if rule.count == 1 else f", {rule.count} times")
        last = recurrence.until_local(rule.until, zone)
        return text + f", until {last:%a} {last.day} {last:%b %Y}"
    except (recurrence.RuleError, KeyError, ValueError):
        return series.rule
