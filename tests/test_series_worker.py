"""A series through real workers: racing and duplicate deliveries, a lost answer and a killed worker
still leave one recurring event per calendar with the right exceptions."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from bookings.models import Booking
from calendar_sync import tasks
from tests.helpers import GOOGLE_ACCOUNT, MS_ACCOUNT, settled
from tests.stack import wait_until
from tests.test_series_sync import URL, masters, next_monday

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def make_series(api, workspace):
    start = next_monday()
    body = {
        "workspace": workspace.pk,
        "title": "Team room",
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
        "rule": "FREQ=WEEKLY;COUNT=52",
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    series = response.json()
    assert api.post(f"{URL}{series['id']}/confirm/").status_code == 200
    return series


def race(api, fake, account, workspace):
    fake.lose_response()
    series = make_series(api, workspace)
    occurrences = list(Booking.objects.filter(series_id=series["id"]).order_by("start"))
    for booking in occurrences:  # every occurrence delivered twice more, racing the first
        tasks.enqueue("booking", booking.pk)
        tasks.enqueue("booking", booking.pk)
    tenth, eleventh = occurrences[9], occurrences[10]
    start = tenth.start + timedelta(hours=2)
    moved = api.patch(
        f"/api/bookings/{tenth.pk}/",
        {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
        format="json",
    )
    assert moved.status_code == 200, moved.content
    assert api.post(f"/api/bookings/{eleventh.pk}/cancel/").status_code == 200
    for _ in range(2):
        tasks.enqueue("booking", tenth.pk)
        tasks.enqueue("booking", eleventh.pk)

    def converged():
        events = masters(fake, account)
        if not settled(occurrences) or len(events) != 1:
            return False
        rows = fake.expand(account, next(iter(events)))
        return len(rows) == 51 and start.astimezone(UTC) in {s for s, _, _ in rows}

    wait_until(converged, timeout=90, what="one series with its two exceptions")
    time.sleep(1)
    assert len(masters(fake, account)) == 1
    rows = fake.expand(account, next(iter(masters(fake, account))))
    assert eleventh.start.astimezone(UTC) not in {s for s, _, _ in rows}
    assert tenth.start.astimezone(UTC) not in {s for s, _, _ in rows}
    assert sum(1 for c in fake.calls(account) if c["method"] == "POST") <= 3  # one series (a lost answer retried)


def test_racing_deliveries_and_a_lost_answer_give_one_google_series(member_on_worker, fake_google, workspace):
    fake_google.reset_log()
    race(member_on_worker, fake_google, GOOGLE_ACCOUNT, workspace)


def test_racing_deliveries_and_a_lost_answer_give_one_outlook_series(
    outlook_member_on_worker, fake_microsoft, workspace
):
    race(outlook_member_on_worker, fake_microsoft, MS_ACCOUNT, workspace)


def test_a_worker_killed_mid_create_leaves_one_series(member_on_worker, worker, fake_google, workspace):
    fake_google.latency = 1.5
    series = make_series(member_on_worker, workspace)
    wait_until(
        lambda: any(r["path"].startswith("/calendar/") for r in fake_google.http_requests),
        what="the task to call Google",
    )
    worker.kill()
    fake_google.latency = 0
    worker.start()
    tasks.sweep()
    occurrences = list(Booking.objects.filter(series_id=series["id"]))
    wait_until(lambda: settled(occurrences), timeout=60, what="the killed task to be redone")
    events = fake_google.events(GOOGLE_ACCOUNT)
    assert len(events) == 1
    assert len(fake_google.expand(GOOGLE_ACCOUNT, next(iter(events)))) == 52
    first = datetime.fromisoformat(series["bookings"][0]["start"]).astimezone(UTC)
    assert fake_google.expand(GOOGLE_ACCOUNT, next(iter(events)))[0][0] == first
