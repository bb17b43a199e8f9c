"""The host's event-id field may be any text field, nullable or not; a system check names one that can't hold an id."""

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from bookings.models import Workspace
from calendar_sync import api
from calendar_sync.checks import EVENT_ID_MIN_LENGTH, check_event_id_field, check_settings
from calendar_sync.models import SyncRecord
from calendar_sync.sources import Event, EventSource, get_source
from tests.helpers import GOOGLE_ACCOUNT

pytestmark = pytest.mark.django_db
START = timezone.now().replace(microsecond=0) + timezone.timedelta(days=2)


class WorkspaceSource(EventSource):
    """A source whose event-id field is the usual non-nullable CharField(blank=True) (Workspace.address)."""

    model = "bookings.Workspace"
    event_id_field = "address"

    def owner_id(self, obj):
        return get_user_model().objects.get(username="alice").pk

    def should_exist(self, obj):
        return not obj.name.startswith("[cancelled]")

    def event(self, obj, destination="member"):
        return Event(summary=obj.name, start=START, end=START + timezone.timedelta(hours=1))


@pytest.fixture
def workspace_source(settings):
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "SOURCES": {**settings.CALENDAR_SYNC["SOURCES"], "room": f"{__name__}.WorkspaceSource"},
    }
    return get_source("room")


def test_a_non_nullable_event_id_field_cancels_cleanly(google_connected, workspace_source, run):
    room = Workspace.objects.create(name="Board room")
    run(api.resync, "room", [room])
    room.refresh_from_db()
    assert list(google_connected.events(GOOGLE_ACCOUNT)) == [room.address] == [workspace_source.event_id(room.pk)]

    Workspace.objects.filter(pk=room.pk).update(name="[cancelled] Board room")
    run(api.resync, "room", [room])  # queryset.update() sends no signal: the host asks for the sync
    room.refresh_from_db()
    assert room.address == ""  # not None: the column is NOT NULL
    assert google_connected.events(GOOGLE_ACCOUNT) == {}
    assert SyncRecord.objects.get(source="room", object_id=str(room.pk)).state == SyncRecord.State.SYNCED


def test_no_event_is_null_in_a_nullable_field_and_empty_in_another():
    assert get_source("booking").stored_event_id(None) is None  # Booking.google_calendar_event_id is nullable
    assert WorkspaceSource().stored_event_id(None) == ""
    assert WorkspaceSource().stored_event_id("abc123") == "abc123"


@pytest.mark.parametrize(
    "field, problem",
    [
        ("created_at", "DateTimeField, not a CharField"),
        ("time_zone", f"max_length 64 is shorter than an event id may be ({EVENT_ID_MIN_LENGTH})"),
        ("nope", "no such field"),
    ],
)
def test_a_field_that_cannot_hold_an_event_id_is_named(settings, field, problem):
    source = type("Source", (WorkspaceSource,), {"event_id_field": field})()
    (error,) = check_event_id_field(source)
    assert error.id == "calendar_sync.E006"
    assert f"'bookings.Workspace.{field}'" in error.msg and problem in error.msg


def test_the_host_sources_pass_the_check(workspace_source):
    assert not [e for e in check_settings(None) if e.id == "calendar_sync.E006"]
    assert check_event_id_field(get_source("booking")) == []
