"""RFC 5545 recurrence rules, the part of them a booking series uses, expanded in local wall-clock time.

Only FREQ (DAILY, WEEKLY, MONTHLY), INTERVAL, BYDAY, BYMONTHDAY and COUNT or UNTIL are understood;
anything else is refused naming the part, so a rule never means more here than a calendar shows.

Expansion is in naive local time (09:00 stays 09:00 across daylight-saving changes), then each time
is placed in the zone as RFC 5545 §3.3.5 says: a time that does not exist (the spring gap) is read
with the offset before the gap, so it lands that much later (01:30 → 02:30 in Lisbon); a time that
exists twice (the autumn overlap) is the first of the two (fold=0, the summer offset).
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

from dateutil import rrule
from dateutil.relativedelta import relativedelta

MAX_OCCURRENCES = 200
MAX_SPAN = relativedelta(years=1)
MAX_INTERVAL = 366
FREQS = {"DAILY": rrule.DAILY, "WEEKLY": rrule.WEEKLY, "MONTHLY": rrule.MONTHLY}
DAYS = {"MO": rrule.MO, "TU": rrule.TU, "WE": rrule.WE, "TH": rrule.TH, "FR": rrule.FR, "SA": rrule.SA, "SU": rrule.SU}
PARTS = ("FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT", "UNTIL")
_NUMBER = re.compile(r"[+-]?[0-9]{1,4}")
_DAY = re.compile(r"([+-]?[0-9]{1,2})?([A-Z]{2})")
_UNTIL = re.compile(r"([0-9]{8})(?:T([0-9]{6})(Z?))?")


class RuleError(ValueError):
    """The rule is not one a series can have; the message names the part."""


@dataclass(frozen=True)
class Rule:
    freq: str
    interval: int = 1
    byday: tuple[str, ...] = ()
    bymonthday: tuple[int, ...] = ()
    count: int | None = None
    until: str | None = None  # as written: YYYYMMDD, YYYYMMDDTHHMMSS (local) or YYYYMMDDTHHMMSSZ

    def text(self, zone):
        """The rule, normalized: parts in one order, UNTIL in UTC (what calendars require with a zone)."""
        parts = [f"FREQ={self.freq}"]
        if self.interval != 1:
            parts.append(f"INTERVAL={self.interval}")
        if self.byday:
            parts.append("BYDAY=" + ",".join(self.byday))
        if self.bymonthday:
            parts.append("BYMONTHDAY=" + ",".join(map(str, self.bymonthday)))
        if self.count is not None:
            parts.append(f"COUNT={self.count}")
        if self.until is not None:
            parts.append(f"UNTIL={until_local(self.until, zone).replace(tzinfo=zone).astimezone(UTC):%Y%m%dT%H%M%SZ}")
        return ";".join(parts)


def _number(part, value, low, high, signed=False):
    """An integer from low to high (or, signed, from -high to -low too)."""
    if not _NUMBER.fullmatch(value) or not low <= (abs(int(value)) if signed else int(value)) <= high:
        raise RuleError(
            f"{part}={value[:20]} is not a number from {low} to {high}{' (or negative)' if signed else ''}."
        )
    return int(value)


def parse(text):
    """A Rule from an RRULE string (with or without the "RRULE:" prefix), or RuleError naming the part."""
    text = text.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    values = {}
    for item in filter(None, text.split(";")):
        name, sep, value = item.partition("=")
        name, value = name.strip().upper(), value.strip().upper()
        if not sep or not name:
            raise RuleError(f"{item!r} is not a NAME=VALUE part of a rule.")
        if name not in PARTS:
            raise RuleError(f"{name} is not supported in a series rule (only {', '.join(PARTS)}).")
        if name in values:
            raise RuleError(f"{name} is given twice.")
        values[name] = value
    freq = values.get("FREQ")
    if freq is None:
        raise RuleError("FREQ is required.")
    if freq not in FREQS:
        raise RuleError(f"FREQ={freq[:20]} is not supported (only DAILY, WEEKLY or MONTHLY).")
    if ("COUNT" in values) == ("UNTIL" in values):
        raise RuleError("A series needs exactly one of COUNT or UNTIL.")
    byday = tuple(filter(None, values.get("BYDAY", "").split(",")))
    for day in byday:
        match = _DAY.fullmatch(day)
        if not match or match[2] not in DAYS:
            raise RuleError(f"BYDAY={day[:20]} is not a day (MO, TU, WE, TH, FR, SA or SU).")
        if match[1] and (freq != "MONTHLY" or not 1 <= abs(int(match[1])) <= 5):
            raise RuleError(f"BYDAY={day} (a numbered day) is only for FREQ=MONTHLY, numbered 1 to 5 or -1 to -5.")
    if "BYMONTHDAY" in values and freq == "WEEKLY":
        raise RuleError("BYMONTHDAY is not allowed with FREQ=WEEKLY.")
    bymonthday = tuple(
        _number("BYMONTHDAY", day, 1, 31, signed=True) for day in filter(None, values.get("BYMONTHDAY", "").split(","))
    )
    if "UNTIL" in values and not _UNTIL.fullmatch(values["UNTIL"]):
        raise RuleError(f"UNTIL={values['UNTIL'][:30]} is not a date (YYYYMMDD) or a time (YYYYMMDDTHHMMSSZ).")
    return Rule(
        freq=freq,
        interval=_number("INTERVAL", values["INTERVAL"], 1, MAX_INTERVAL) if "INTERVAL" in values else 1,
        byday=byday,
        bymonthday=bymonthday,
        count=_number("COUNT", values["COUNT"], 1, 9999) if "COUNT" in values else None,
        until=values.get("UNTIL"),
    )


def until_local(until, zone):
    """UNTIL as a naive local time: a date means its whole day, a UTC time is converted, a floating one is local."""
    date, time, utc = _UNTIL.fullmatch(until).groups()
    try:
        if time is None:
            return datetime.strptime(date, "%Y%m%d") + timedelta(days=1, microseconds=-1)
        value = datetime.strptime(date + time, "%Y%m%d%H%M%S")
        return value.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None) if utc else value
    except (ValueError, OverflowError):  # OverflowError: a UTC time past year 1 or 9999 in the zone
        raise RuleError(f"UNTIL={until} is not a real date.") from None


def localize(naive, zone):
    """A naive local time in `zone`, as RFC 5545 reads it (see the module's docstring), in UTC."""
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def expand(rule, first_start, zone_name):
    """The starts (aware, UTC) of every occurrence, the first being `first_start`.

    Refuses a rule whose first occurrence is not `first_start`, that has more than MAX_OCCURRENCES
    occurrences or whose last begins more than a year after the first. The expansion never looks
    past that year, so no rule (however odd its filters) takes long.
    """
    zone = ZoneInfo(zone_name)
    dtstart = first_start.astimezone(zone).replace(tzinfo=None)
    if rule.count is not None and rule.count > MAX_OCCURRENCES:
        raise RuleError(f"COUNT={rule.count}: a series has at most {MAX_OCCURRENCES} occurrences.")
    cap = dtstart + MAX_SPAN
    until = cap
    if rule.until is not None:
        until = until_local(rule.until, zone)
        if until < dtstart:
            raise RuleError(f"UNTIL={rule.until} is before the first occurrence.")
        if until > cap + timedelta(days=1):
            raise RuleError(f"UNTIL={rule.until}: a series spans at most one year.")
        until = min(until, cap)
    days = [DAYS[m[2]](int(m[1])) if m[1] else DAYS[m[2]] for m in (_DAY.fullmatch(d) for d in rule.byday)]
    try:
        recurrence = rrule.rrule(
            FREQS[rule.freq],
            dtstart=dtstart,
            interval=rule.interval,
            byweekday=days or None,
            bymonthday=list(rule.bymonthday) or None,
            until=until,
            cache=False,
        )
        starts = list(islice(recurrence, rule.count or MAX_OCCURRENCES + 1))
    except (ValueError, OverflowError) as exc:
        raise RuleError(f"The rule cannot be expanded: {exc}.") from None
    if not starts or starts[0] != dtstart:
        raise RuleError("`start` must be the rule's first occurrence (e.g. on one of its BYDAY days).")
    if len(starts) > MAX_OCCURRENCES:
        raise RuleError(f"The rule has more than {MAX_OCCURRENCES} occurrences.")
    if rule.count is not None and len(starts) < rule.count:
        raise RuleError(f"COUNT={rule.count}: the occurrences would span more than one year.")
    # The first is exactly the start given (even in an hour that repeats); the rest are wall-clock times.
    return [first_start.astimezone(UTC)] + [localize(start, zone) for start in starts[1:]]
