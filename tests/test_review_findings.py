"""Input an attacker might send to the new endpoints: a 4xx with `code` and `detail`, never a 500,
never half-saved state, never a private address fetched."""

import datetime as dt
import http.server
import ipaddress
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.test import Client

from bookings.models import Booking, Series
from calendar_sync import fetch
from calendar_sync.exceptions import PermanentError
from calendar_sync.models import CalendarToken
from calendar_sync.providers.ics import expand, parse
from tests.caldav_servers import IcsServer, Radicale
from tests.test_series import body, next_monday

pytestmark = pytest.mark.django_db
WEEK = "/integrations/calendar"


@pytest.mark.parametrize(
    "start,end",
    [
        ("2026-13-01T00:00:00Z", "2026-13-02T00:00:00Z"),  # well formed, no such month
        ("2026-02-30T00:00:00+00:00", "2026-03-01T00:00:00+00:00"),
        ("0001-01-01T00:00:00+01:00", "0001-01-01T10:00:00+01:00"),  # before year 1 in UTC
        ("9999-12-31T20:00:00-05:00", "9999-12-31T22:00:00-05:00"),  # after year 9999 in UTC
    ],
)
def test_week_with_an_impossible_time_is_a_400(member, start, end):
    client = Client()
    client.force_login(member)
    response = client.get(WEEK, {"part": "week", "start": start, "end": end})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and response.json()["detail"]


def test_week_at_the_end_of_the_calendar_answers(member):
    client = Client()
    client.force_login(member)
    response = client.get(WEEK, {"part": "week", "start": "9999-12-31T00:00:00Z", "end": "9999-12-31T10:00:00Z"})
    assert response.status_code == 200 and response.json() == {"bookings": []}


@pytest.mark.parametrize("until", ["99991231T235959Z", "00010101T000000Z"])
def test_series_until_at_the_ends_of_the_calendar_is_a_400(api, workspace, until):
    """Read in the workspace's zone (Lisbon), these UTC times fall outside years 1 to 9999."""
    response = api.post("/api/bookings/series/", body(workspace, rule=f"FREQ=DAILY;UNTIL={until}"), format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and "UNTIL" in response.json()["detail"]
    assert not Series.objects.exists() and not Booking.objects.exists()


def test_series_rule_that_grows_when_normalized_is_a_400(api, workspace):
    """A 500-character rule with a date UNTIL grows by its time and Z when stored (UNTIL in UTC):
    refused naming the rule, nothing stored, rather than a database error."""
    start = next_monday()
    until = (start + timedelta(days=300)).strftime("%Y%m%d")
    head = f"FREQ=WEEKLY;UNTIL={until};BYDAY="
    days = ["MO"] * ((500 - len(head) + 1) // 3)
    rule = head + ",".join(days)
    assert len(rule) <= 500
    response = api.post("/api/bookings/series/", body(workspace, rule=rule, start=start), format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid" and "rule" in response.json()
    assert not Series.objects.exists() and not Booking.objects.exists()


@pytest.fixture
def private_addresses_off(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": False}


def test_ipv6_site_local_addresses_are_private(api, private_addresses_off):
    """fec0::/10 (deprecated site-local, still routed inside some networks) is "global" to Python's ipaddress."""
    assert not fetch.is_public(ipaddress.ip_address("fec0::1"))
    assert not fetch.is_public(ipaddress.ip_address("feff::1"))
    response = api.post("/api/calendar-sync/connections/ics", {"url": "https://[fec0::1]/feed.ics"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "private_address"
    assert not CalendarToken.objects.exists()


SECONDLY = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//x//EN\r\nBEGIN:VEVENT\r\nUID:flood\r\n"
    b"DTSTART:20270101T090000Z\r\nDTEND:20270101T090001Z\r\nRRULE:FREQ=SECONDLY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def test_a_feed_that_repeats_every_second_is_refused_quickly_not_expanded(api, member, settings, run):
    """A member's own ICS server could otherwise make one busy read build millions of blocks (minutes of
    CPU and memory in a web worker): the read stops at a bound and says so."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    server = IcsServer(SECONDLY)
    try:
        response = run(api.post, "/api/calendar-sync/connections/ics", {"url": server.url}, format="json")
        assert response.status_code == 201, response.content
        began = time.monotonic()
        busy = api.get("/api/calendar-sync/busy", {"start": "2027-01-01T00:00:00Z", "end": "2027-01-08T00:00:00Z"})
        took = time.monotonic() - began
    finally:
        server.close()
    # Its only connection failed: the error itself (with others, it would be named in `errors`).
    assert busy.status_code == 502 and busy.json()["code"] == "too_many_events", busy.content
    assert took < 10


def test_expansion_stops_at_its_bound():
    with pytest.raises(PermanentError) as refused:
        expand(parse(SECONDLY), dt.datetime(2027, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 1, 2, tzinfo=dt.UTC))
    assert refused.value.code == "too_many_events"


def test_the_booking_admin_cannot_attach_a_booking_to_a_series(api, workspace, make_user, make_booking, other):
    """Occurrences come from the rule: a booking attached by hand (another member's, no series_start)
    would be cancelled with that series and make moving or cancelling it from an occurrence fail."""
    series = api.post("/api/bookings/series/", body(workspace, rule="FREQ=DAILY;COUNT=2"), format="json").json()
    stray = make_booking(other, hours_from_now=24 * 20)
    root = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)
    url = f"/admin/bookings/booking/{stray.pk}/change/"
    assert 'name="series"' not in client.get(url).content.decode()
    form = {
        "user": other.pk,
        "workspace": workspace.pk,
        "title": stray.title,
        "start_0": stray.start.strftime("%Y-%m-%d"),
        "start_1": stray.start.strftime("%H:%M:%S"),
        "end_0": stray.end.strftime("%Y-%m-%d"),
        "end_1": stray.end.strftime("%H:%M:%S"),
        "status": stray.status,
        "series": series["id"],
    }
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    stray.refresh_from_db()
    assert stray.series_id is None
    first = series["bookings"][0]["id"]
    response = api.post(f"/api/bookings/series/{series['id']}/cancel/", {"from": first}, format="json")
    assert response.status_code == 200
    stray.refresh_from_db()
    assert stray.status == Booking.Status.PENDING  # another member's booking is not touched


@pytest.fixture
def trickling_link():
    """An ICS link whose server sends its headers, then one byte every 0.3 s (about five minutes in all)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/calendar\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.3):
                try:
                    conn.sendall(b"B")
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/feed.ics"
    stop.set()
    server.close()


def test_an_ics_link_that_trickles_is_given_up_at_the_fetch_deadline(api, settings, trickling_link):
    settings.CALENDAR_SYNC = {
        **settings.CALENDAR_SYNC,
        "ALLOW_PRIVATE_ADDRESSES": True,
        "ICS_FETCH_SECONDS": 1,
        "HTTP_TIMEOUT": 5,
    }
    began = time.monotonic()
    response = api.post("/api/calendar-sync/connections/ics", {"url": trickling_link}, format="json")
    assert time.monotonic() - began < 4
    assert response.status_code == 400 and response.json()["code"] == "unreachable"
    assert not CalendarToken.objects.exists()


class RadicaleWithAnAccentedPassword(Radicale):
    password = "пароль — 密码"


def test_a_caldav_password_outside_latin_1_keeps_working_after_connecting(api, settings):
    """Connecting signs in as the caldav client does (UTF-8); every later request must too."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    with RadicaleWithAnAccentedPassword() as server:
        body = {"server_url": server.url, "username": server.username, "password": server.password}
        response = api.post("/api/calendar-sync/connections/caldav", body, format="json")
        assert response.status_code == 201, response.content
        busy = api.get("/api/calendar-sync/busy", {"start": "2027-01-01T00:00:00Z", "end": "2027-01-08T00:00:00Z"})
    assert busy.status_code == 200, busy.content
    assert busy.json()["errors"] == []


def test_an_international_host_name_is_reached(api, settings, monkeypatch):
    """requests sends a host name in its IDNA form (xn--…): the address checked for the name typed
    must be the one it connects to, not "This address was not checked"."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    server = IcsServer(SECONDLY)
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host in ("kalender.bücher.example", "kalender.xn--bcher-kva.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        with fetch.SafeSession() as session:
            response = session.get(server.url.replace("127.0.0.1", "kalender.bücher.example"), timeout=5)
    finally:
        server.close()
    assert response.status_code == 200 and response.content == SECONDLY


class _LongHrefCalDAV(http.server.BaseHTTPRequestHandler):
    """A CalDAV server whose one calendar has an address longer than a connection can store."""

    protocol_version = "HTTP/1.1"
    calendar = "/home/" + "c" * 1100 + "/"

    def log_message(self, *args):
        pass

    def do_PROPFIND(self):
        asked = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if "current-user-principal" in asked:
            href, prop = self.path, "<d:current-user-principal><d:href>/p/</d:href></d:current-user-principal>"
        elif "calendar-home-set" in asked:
            href, prop = self.path, "<c:calendar-home-set><d:href>/home/</d:href></c:calendar-home-set>"
        else:
            href, prop = self.calendar, "<d:resourcetype><d:collection/><c:calendar/></d:resourcetype>"
        body = (
            '<?xml version="1.0"?><d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
            f"<d:response><d:href>{href}</d:href><d:propstat><d:prop>{prop}</d:prop>"
            "<d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"
        ).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_caldav_calendar_address_too_long_to_store_is_a_400_and_stores_nothing(api, settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LongHrefCalDAV)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = {"server_url": f"http://127.0.0.1:{server.server_address[1]}/", "username": "a", "password": "b"}
        response = api.post("/api/calendar-sync/connections/caldav", body, format="json")
    finally:
        server.shutdown()
        server.server_close()
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "no_calendar" and "server_url" in response.json()
    assert not CalendarToken.objects.exists()
