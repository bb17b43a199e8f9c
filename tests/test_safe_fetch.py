"""Addresses members type are fetched only over https and only from public addresses (redirects re-checked)."""

import io
import ipaddress
import socket

import pytest
import requests

from calendar_sync import fetch
from calendar_sync.models import CalendarToken
from tests.caldav_servers import IcsServer

pytestmark = pytest.mark.django_db
PRIVATE = ["https://127.0.0.1/", "https://[::1]/", "https://10.0.0.1/", "https://169.254.169.254/latest/meta-data/"]
PUBLIC_NAME, PUBLIC_ADDRESS = "calendar.example.com", "93.184.215.14"


@pytest.fixture(autouse=True)
def private_addresses_off(settings):
    """Whatever the environment says (CALENDAR_SYNC_ALLOW_PRIVATE_ADDRESSES): these tests are about it off."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": False}


def post(api, kind, url):
    if kind == "ics":
        return api.post("/api/calendar-sync/connections/ics", {"url": url}, format="json")
    body = {"server_url": url, "username": "alice", "password": "pw"}
    return api.post("/api/calendar-sync/connections/caldav", body, format="json")


FIELD = {"ics": "url", "caldav": "server_url"}


@pytest.mark.parametrize("kind", ["ics", "caldav"])
@pytest.mark.parametrize("url", PRIVATE)
def test_private_addresses_are_refused_naming_the_field(api, kind, url):
    response = post(api, kind, url)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "private_address"
    assert FIELD[kind] in body and body["detail"].startswith(f"{FIELD[kind]}:")
    assert not CalendarToken.objects.exists()


@pytest.mark.parametrize("kind", ["ics", "caldav"])
def test_plain_http_is_refused(api, kind):
    response = post(api, kind, "http://calendar.example.com/feed.ics")
    assert response.status_code == 400 and response.json()["code"] == "insecure_url"


@pytest.fixture
def public_host_redirecting_to(monkeypatch):
    """A public host (its name resolves to a public address) whose server answers with a redirect.
    The system resolver and the session's sending are stood in for in the libraries: there is no network."""
    real_getaddrinfo = socket.getaddrinfo
    target = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host == PUBLIC_NAME:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_ADDRESS, port))]
        return real_getaddrinfo(host, port, *args, **kwargs)

    real_send = requests.Session.send
    reached = []

    def send(self, request, *args, **kwargs):
        if PUBLIC_NAME in request.url:
            reached.append(request.url)
            response = requests.Response()
            response.status_code, response.url, response.request = 302, request.url, request
            response.headers = requests.structures.CaseInsensitiveDict({"Location": target["url"]})
            response._content, response.raw = b"", io.BytesIO(b"")
            return response
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(requests.Session, "send", send)

    def redirect_to(url):
        target["url"] = url
        return reached

    return redirect_to


@pytest.mark.parametrize("kind", ["ics", "caldav"])
@pytest.mark.parametrize("url", PRIVATE)
def test_a_public_host_redirecting_to_a_private_address_is_refused(api, kind, url, public_host_redirecting_to):
    reached = public_host_redirecting_to(url)
    response = post(api, kind, f"https://{PUBLIC_NAME}/calendars/")
    assert reached  # the public host was asked
    assert response.status_code == 400
    assert response.json()["code"] == "private_address" and FIELD[kind] in response.json()
    assert response.json()["detail"].startswith(f"{FIELD[kind]}:") and not CalendarToken.objects.exists()


def test_redirects_are_limited(public_host_redirecting_to, settings):
    public_host_redirecting_to(f"https://{PUBLIC_NAME}/again")
    with fetch.SafeSession() as session, pytest.raises(fetch.RefusedAddress) as refused:
        session.get(f"https://{PUBLIC_NAME}/start")
    assert refused.value.code == "too_many_redirects"


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.0.0.1", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # shared address space (carrier-grade NAT)
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("2002:7f00:1::1", False),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
    ],
)
def test_which_addresses_are_public(address, public):
    assert fetch.is_public(ipaddress.ip_address(address)) is public


def test_the_address_checked_is_the_address_connected(settings, monkeypatch):
    """A second DNS answer (rebinding) never reaches the connection: the session knows only the pinned one."""
    answers = iter([PUBLIC_ADDRESS, "127.0.0.1"])
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))],
    )
    with fetch.SafeSession() as session:
        session.check(f"https://{PUBLIC_NAME}/")
        session.check(f"https://{PUBLIC_NAME}/other")  # resolved once per session: no second answer taken
        assert session.pins == {PUBLIC_NAME: PUBLIC_ADDRESS}


def test_private_addresses_can_be_allowed_for_tests_and_the_sandbox(settings):
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    assert fetch.normalize("http://127.0.0.1:5232/") == "http://127.0.0.1:5232/"
    assert fetch.resolve("http://127.0.0.1:5232/") == ("127.0.0.1", ["127.0.0.1"])


def test_a_rebinding_name_still_reaches_only_the_checked_address(settings, monkeypatch):
    """The name answers 127.0.0.1 when checked and an unroutable address ever after: the fetch still
    reaches the first (the connection never asks the DNS again), with the name kept in the Host header."""
    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    feed = IcsServer(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nEND:VCALENDAR\r\n")
    port = feed.server.server_address[1]
    real_getaddrinfo, answers = socket.getaddrinfo, iter(["127.0.0.1"])

    def getaddrinfo(host, *args, **kwargs):
        if host == "feed.example":
            address = next(answers, "10.255.255.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        with fetch.SafeSession() as session:
            response = session.get(f"http://feed.example:{port}{feed.path}", timeout=5)
    finally:
        feed.close()
    assert response.status_code == 200 and response.content.startswith(b"BEGIN:VCALENDAR")
    assert response.url == f"http://feed.example:{port}{feed.path}"


def _certificate(tmp_path, name):
    """A self-signed certificate for `name` (key and certificate in one PEM file)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / f"{name}.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + certificate.public_bytes(serialization.Encoding.PEM)
    )
    return path


@pytest.mark.parametrize("served_as, ok", [("feed.example", True), ("elsewhere.example", False)])
def test_https_to_the_pinned_address_checks_the_certificate_of_the_name(settings, monkeypatch, tmp_path, served_as, ok):
    """Connecting to the checked address keeps TLS about the name: SNI and the certificate check use it."""
    import ssl

    settings.CALENDAR_SYNC = {**settings.CALENDAR_SYNC, "ALLOW_PRIVATE_ADDRESSES": True}
    pem = _certificate(tmp_path, served_as)
    feed = IcsServer(b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nEND:VCALENDAR\r\n")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    names = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    feed.server.socket = context.wrap_socket(feed.server.socket, server_side=True)
    port = feed.server.server_address[1]
    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *a, **k: (
            [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
            if host == "feed.example"
            else real_getaddrinfo(host, *a, **k)
        ),
    )
    try:
        with fetch.SafeSession() as session:
            if ok:
                response = session.get(f"https://feed.example:{port}{feed.path}", timeout=5, verify=str(pem))
                assert response.status_code == 200 and response.content.startswith(b"BEGIN:VCALENDAR")
            else:
                with pytest.raises(requests.exceptions.SSLError):
                    session.get(f"https://feed.example:{port}{feed.path}", timeout=5, verify=str(pem))
    finally:
        feed.close()
    assert names and names[0] == "feed.example"  # SNI names the host, not the address
