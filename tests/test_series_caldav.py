"""A series on a CalDAV server (Radicale and Xandikos) is one resource: one VEVENT with RRULE, EXDATE
for cancelled occurrences and a RECURRENCE-ID VEVENT per exception. Writes counted by a proxy."""

from datetime import UTC

import icalendar
import pytest
import recurring_ical_events

from calendar_sync import sync
from calendar_sync.models import SyncRecord
from tests import test_caldav
from tests.helpers import LISBON
from tests.test_series_sync import URL, make_series, move_later

pytestmark = pytest.mark.django_db
server, proxy, private_ok, connected = (  # CalDAV's fixtures: Radicale and Xandikos, a counting proxy
    test_caldav.server,
    test_caldav.proxy,
    test_caldav.private_ok,
    test_caldav.connected,
)


def expanded(running):
    (text,) = running.events()
    calendar = icalendar.Calendar.from_ical(text)
    rows = recurring_ical_events.of(calendar).between((2000, 1, 1), (2100, 1, 1))
    return text, sorted(
        (e["DTSTART"].dt.astimezone(UTC), e["DTEND"].dt.astimezone(UTC), str(e["SUMMARY"])) for e in rows
    )


def test_a_series_is_one_resource_with_its_exceptions(server, connected, api, workspace, run, proxy):
    series = make_series(api, workspace, run)
    assert [m for m, _ in proxy.writes()] == ["PUT"]
    text, rows = expanded(server)
    assert "RRULE:FREQ=WEEKLY;COUNT=52" in text and "TZID=Europe/Lisbon" in text
    assert len(rows) == 52
    assert {
        (s.astimezone(LISBON).strftime("%a %H:%M"), e.astimezone(LISBON).strftime("%H:%M")) for s, e, _ in rows
    } == {("Mon 09:00", "10:00")}
    proxy.reset()
    tenth, eleventh = series["bookings"][9], series["bookings"][10]
    start = move_later(api, run, tenth, hours=2)
    assert run(api.post, f"/api/bookings/{eleventh['id']}/cancel/").status_code == 200
    assert [m for m, _ in proxy.writes()] == ["PUT", "PUT"]
    text, after = expanded(server)
    assert "RECURRENCE-ID" in text and "EXDATE" in text
    assert len(after) == 51 and start in {s for s, _, _ in after}
    assert rows[10][0] not in {s for s, _, _ in after}
    # The series retitled: one write for it, one for the moved occurrence (its exception carries a title).
    proxy.reset()
    assert run(api.patch, f"{URL}{series['id']}/", {"title": "Board room"}, format="json").status_code == 200
    assert [m for m, _ in proxy.writes()] == ["PUT", "PUT"]
    text, last = expanded(server)
    assert len(last) == 51 and start in {s for s, _, _ in last}
    assert {t for _, _, t in last} == {"Board room — The Loft"}
    # Re-running every task writes nothing.
    proxy.reset()
    SyncRecord.objects.update(state="pending", version=1000)
    for record in SyncRecord.objects.filter(destination="member"):
        assert sync.sync_object("booking", record.object_id, "member") == "synced"
    assert proxy.writes() == []
    assert run(api.post, f"{URL}{series['id']}/cancel/").status_code == 200
    assert server.events() == []
