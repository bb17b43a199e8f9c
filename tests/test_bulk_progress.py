"""Members first, and bulk work that shows its progress.

Interactive work (a booking's sync) goes to the app's queue, bulk work (backfill, calendar move,
resync of many, pulls) to the bulk queue — checked on the messages Celery really publishes (kombu's
in-memory transport) and on a real worker that consumes only one of them. While a backfill, calendar
move or resync runs, `status` carries its progress; null otherwise.
"""

import io
import time
import uuid

import pytest
from celery import Celery
from celery.app.task import Context
from django.core.management import call_command
from django.utils import timezone

from bookings import services
from bookings.models import Booking
from calendar_sync import flows, progress, sync, tasks
from calendar_sync.models import CalendarToken, SyncRecord
from calendar_sync.owners import Owner
from calendar_sync.tasks import queue
from managehub.celery import app as celery_app
from tests.helpers import ROOM_ACCOUNT, client_for, connect, connect_room, event_key, landing
from tests.stack import wait_until

SHARED = "/api/calendar-sync/shared/workspace/{}/status"


def room_bookings(member, workspace, n, hours_from_now=24):
    """n confirmed bookings of the workspace, an hour apart, made without signals (nothing enqueued)."""
    start = timezone.now().replace(microsecond=0) + timezone.timedelta(hours=hours_from_now)
    return Booking.objects.bulk_create(
        [
            Booking(
                user=member,
                workspace=workspace,
                title=f"B{i}",
                start=start + timezone.timedelta(hours=i),
                end=start + timezone.timedelta(hours=i, minutes=30),
                status=Booking.Status.CONFIRMED,
            )
            for i in range(n)
        ]
    )


@pytest.fixture
def published(settings):
    """Publish the app's tasks to kombu's in-memory broker (a Celery app of its own, made current):
    yields a function that takes every message waiting in a queue, as (task name, args)."""
    names = {"QUEUE": f"i-{uuid.uuid4().hex}", "BULK_QUEUE": f"b-{uuid.uuid4().hex}"}
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, **names}
    probe = Celery("probe", broker="memory://", set_as_current=False)
    probe.set_current()

    def take(which):
        found = []
        with probe.connection_for_read() as conn:
            while (message := conn.default_channel.basic_get(names[which], no_ack=True)) is not None:
                found.append((message.headers["task"].rsplit(".", 1)[1], message.headers["argsrepr"]))
        return found

    yield take
    celery_app.set_current()


@pytest.mark.django_db
def test_each_task_goes_to_its_queue(
    published, member, staff, workspace, make_booking, django_capture_on_commit_callbacks
):
    booking = make_booking(member)
    with django_capture_on_commit_callbacks(execute=True):
        services.confirm_booking(booking)  # a member's booking: interactive
    assert published("QUEUE") == [("sync", repr(("booking", str(booking.pk))))]

    room = Owner("workspace", str(workspace.pk))
    CalendarToken.objects.create(
        owner_kind=room.kind,
        owner_id=room.id,
        provider="google",
        connected_by=staff,
        access_token="a",
        refresh_token="r",
    )
    tasks.send(flows.connect(CalendarToken.objects.get(owner_kind="workspace")))  # connect: backfill, pull, channel
    tasks.enqueue_work([sync.Work("booking", str(booking.pk), "workspace", 5)])  # what a backfill left to do
    SyncRecord.objects.create(
        source="booking", object_id=str(booking.pk), destination="workspace", **room.lookup(), state="failed"
    )
    tasks.send(flows.resync(room))  # a resync: its failed syncs and a backfill shown as "resync"
    tasks.sweep.apply_async()  # as beat sends it: no options
    tasks.health_task.apply_async()
    assert published("BULK_QUEUE") == [
        ("backfill", repr(("workspace", str(workspace.pk)))),
        ("pull", repr(("workspace", str(workspace.pk)))),
        ("renew_push", "()"),
        ("sync", repr(("booking", str(booking.pk)))),
        ("backfill", repr(("workspace", str(workspace.pk), "resync"))),
        ("health", "()"),
    ]
    # one failed sync resynced: someone waits for it, as for a booking; the sweeper is light work
    assert published("QUEUE") == [("sync", repr(("booking", str(booking.pk)))), ("sweep", "()")]

    # a retry goes back to the queue its message came from (as Celery rebuilds it from the request)
    bulk = Context(args=("booking", "7"), kwargs={}, delivery_info={"exchange": "", "routing_key": queue(bulk=True)})
    tasks.sync_task.signature_from_request(bulk, countdown=1, retries=1).apply_async()
    assert published("BULK_QUEUE") == [("sync", repr(("booking", "7")))] and published("QUEUE") == []

    SyncRecord.objects.update(state=SyncRecord.State.FAILED)  # the member's and the room's: a resync of many
    tasks.send(flows.resync_records(SyncRecord.objects.all()))
    assert [name for name, _ in published("BULK_QUEUE")] == ["sync", "sync"] and published("QUEUE") == []


@pytest.mark.django_db
def test_status_shows_a_running_job_and_null_after_it_whatever_its_end(google_connected, api, member):
    token = CalendarToken.objects.get(owner_id=str(member.pk))
    assert api.get("/api/calendar-sync/status").json()["bulk"] is None
    with pytest.raises(RuntimeError), progress.tracked(token, "resync") as shown:
        shown.add(120)
        shown.step(50)
        bulk = api.get("/api/calendar-sync/status").json()["bulk"]
        assert {k: bulk[k] for k in ("kind", "done", "total")} == {"kind": "resync", "done": 50, "total": 120}
        assert abs(timezone.datetime.fromisoformat(bulk["started_at"]) - timezone.now()).total_seconds() < 5
        raise RuntimeError("the job failed")
    assert api.get("/api/calendar-sync/status").json()["bulk"] is None

    # a job whose worker was killed never clears its progress: once stale it is shown no more
    shown = progress.Progress(token.pk, "backfill")
    shown.add(10)
    assert api.get("/api/calendar-sync/status").json()["bulk"]["total"] == 10
    long_ago = timezone.now() - timezone.timedelta(seconds=progress.STALE_AFTER + 1)
    CalendarToken.objects.filter(pk=token.pk).update(bulk_updated_at=long_ago)
    assert api.get("/api/calendar-sync/status").json()["bulk"] is None


@pytest.mark.django_db
def test_backfill_goes_chunk_by_chunk_and_clears_its_progress(fake_google, staff, member, workspace, run, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "BULK_CHUNK": 4}
    bookings = room_bookings(member, workspace, 10)
    fake_google.add_account(ROOM_ACCOUNT)
    staff_api = client_for(staff)
    fake_google.reset_log()
    assert "calendar_sync=connected" in run(connect_room, staff_api, fake_google, workspace, ROOM_ACCOUNT)["Location"]
    assert set(fake_google.events(ROOM_ACCOUNT)) == {event_key(b, "workspace") for b in bookings}
    batches = [r for r in fake_google.http_requests if r["path"].endswith("/batch/calendar/v3")]
    assert len(batches) == 3  # 4 + 4 + 2
    assert staff_api.get(SHARED.format(workspace.pk)).json()["bulk"] is None

    # a calendar move: the removals and the backfill, one job, in chunks too
    fake_google.reset_log()
    token = CalendarToken.objects.get(owner_kind="workspace")
    CalendarToken.objects.filter(pk=token.pk).update(calendar_id="team@group.calendar.google.com")
    counts, later = sync.move_calendar(Owner("workspace", str(workspace.pk)), "primary")
    assert counts == {"synced": 10} and later == []
    assert fake_google.events(ROOM_ACCOUNT) == {}
    assert len(fake_google.events(ROOM_ACCOUNT, "team@group.calendar.google.com")) == 10
    # Google moves them (events.move, 4 + 4 + 2): nothing to remove, nothing left to create
    assert len([r for r in fake_google.http_requests if r["path"].endswith("/batch/calendar/v3")]) == 3
    assert staff_api.get(SHARED.format(workspace.pk)).json()["bulk"] is None


@pytest.mark.django_db
def test_the_sweeper_leaves_a_running_backfill_alone(fake_google, staff, member, workspace, run, settings):
    """What a backfill has yet to send is pending for as long as it runs: not work left behind."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "BULK_CHUNK": 4, "SWEEP_STALE_AFTER": 0}
    room_bookings(member, workspace, 10)
    fake_google.add_account(ROOM_ACCOUNT)
    swept = []

    def sweep_midway(job):
        if job.done == 4:
            swept.append(tasks.sweep())

    with progress.reported(sweep_midway):
        response = run(connect_room, client_for(staff), fake_google, workspace, ROOM_ACCOUNT)
    assert "calendar_sync=connected" in response["Location"]
    assert swept == [0]
    assert len(fake_google.events(ROOM_ACCOUNT)) == 10
    assert list(SyncRecord.objects.values_list("state", "retry_at").distinct()) == [("synced", None)]


@pytest.mark.django_db
def test_commands_that_wait_print_progress_as_they_go(fake_google, staff, member, workspace, run, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "BULK_CHUNK": 4}
    room_bookings(member, workspace, 10)
    fake_google.add_account(ROOM_ACCOUNT)
    staff_api = client_for(staff)
    assert "calendar_sync=connected" in run(connect_room, staff_api, fake_google, workspace, ROOM_ACCOUNT)["Location"]
    out = io.StringIO()
    call_command("calendar_sync_resync", "--owner", f"workspace:{workspace.pk}", "--wait", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "resync: 0 of 10 (0%)" and lines[-2:] == [
        "resync: 10 of 10 (100%)",
        "Done: 1 connection(s) resynced.",
    ]
    out = io.StringIO()
    team = "team@group.calendar.google.com"
    call_command("calendar_sync_change_calendar", "--owner", f"workspace:{workspace.pk}", team, "--wait", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "calendar_move: 0 of 10 (0%)" and "calendar_move: 10 of 10 (100%)" in lines  # moved
    assert fake_google.events(ROOM_ACCOUNT) == {} and len(fake_google.events(ROOM_ACCOUNT, team)) == 10
    assert staff_api.get(SHARED.format(workspace.pk)).json()["bulk"] is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_members_first_and_progress_on_a_real_worker(stack, fake_google, member, staff, workspace, make_booking):
    """A worker on the interactive queue alone syncs a member's booking while the room's backfill waits
    in the bulk queue; a worker on the bulk queue then runs it, its progress visible in the shared status."""
    n = 120
    room_bookings(member, workspace, n, hours_from_now=24 * 30)
    fake_google.add_account(ROOM_ACCOUNT)
    api, staff_api = client_for(member), client_for(staff)
    assert landing(connect(api, fake_google))["calendar_sync"] == "connected"  # eager: its (empty) backfill runs here
    celery_app.conf.task_always_eager = False
    celery_app.control.purge()
    assert "calendar_sync=connected" in connect_room(staff_api, fake_google, workspace, ROOM_ACCOUNT)["Location"]

    stack.queues = "calendar_sync"
    stack.start()
    booking = make_booking(member)
    api.post(f"/api/bookings/{booking.pk}/confirm/")
    wait_until(lambda: event_key(booking) in fake_google.events("member@example.com"), what="the member's event")
    wait_until(lambda: event_key(booking, "workspace") in fake_google.events(ROOM_ACCOUNT), what="its room event")
    time.sleep(0.5)
    assert len(fake_google.events(ROOM_ACCOUNT)) == 1  # the backfill has not run: nobody consumes its queue
    assert staff_api.get(SHARED.format(workspace.pk)).json()["bulk"] is None

    fake_google.latency = 0.3  # each batch of BULK_CHUNK (50) takes a while: progress can be seen
    try:
        bulk_worker = type(stack)(stack.env, concurrency=1, queues="calendar_sync.bulk")
        bulk_worker.start()
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            bulk = staff_api.get(SHARED.format(workspace.pk)).json()["bulk"]
            if bulk is None and seen:
                break
            if bulk is not None:
                seen.append((bulk["kind"], bulk["done"], bulk["total"]))
            time.sleep(0.05)
    finally:
        fake_google.latency = 0.0
        bulk_worker.stop()
    assert {kind for kind, _, _ in seen} == {"backfill"}
    # every upcoming booking of the room but the member's new one: written already as it is, it costs no call
    assert any(total == n and 0 < done < total for _, done, total in seen), seen
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)  # it only goes forward
    assert len(fake_google.events(ROOM_ACCOUNT)) == n + 1
    assert staff_api.get(SHARED.format(workspace.pk)).json()["bulk"] is None
