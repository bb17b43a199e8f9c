"""The one safe way to reach an address a person typed (a CalDAV server, an ICS link).

Such an address must not turn the app into a way to read this network (SSRF). So: https only;
the host is resolved here and every address it resolves to must be public (`is_public`): no
loopback, private, shared (CGNAT), link-local (169.254.169.254, the cloud metadata service),
multicast, unspecified, reserved or IPv6 site-local range, IPv4 or IPv6, nor IPv4 hidden inside IPv6. The
connection is then made to the addresses checked, never to a second answer of the DNS (no
rebinding between check and connect): the session sends each request to the checked address.
Redirects are followed here, a few at most, each target checked the same way.

`CALENDAR_SYNC["ALLOW_PRIVATE_ADDRESSES"]` (off by default) lets tests and a sandbox use servers
on loopback or a private network, over plain http too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from contextvars import ContextVar
from urllib.parse import urljoin, urlsplit, urlunsplit

import idna
import requests
from requests.adapters import HTTPAdapter

from . import quotas
from .conf import get_setting
from .exceptions import PermanentError, TransientError

MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
#: Set while a session fetches an address that is itself a secret (an ICS link).
_withheld: ContextVar[bool] = ContextVar("calendar_sync_fetch_withheld", default=False)


class _WithholdSecretAddresses(logging.Filter):
    """The HTTP library logs every request line at DEBUG ("GET /<path> HTTP/1.1"): while a secret
    address is fetched, such records say only that a request was made."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _withheld.get():
            record.msg, record.args = "request to a secret address (withheld from the log)", ()
        return True


for _name in ("urllib3.connectionpool", "urllib3.connection"):
    logging.getLogger(_name).addFilter(_WithholdSecretAddresses())


class RefusedAddress(PermanentError):
    """An address the app will not fetch (not https, not public, not a URL, too many redirects)."""

    code = "address_refused"


def private_allowed() -> bool:
    return bool(get_setting("ALLOW_PRIVATE_ADDRESSES"))


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is on the public internet; IPv4 carried in IPv6 is judged as IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is None and address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)  # fec0::/10: "global" to Python
    )


def normalize(url: str) -> str:
    """The URL to fetch: `webcal://` read as https, no credentials in it, https (or http where
    private addresses are allowed). RefusedAddress otherwise. Does not resolve anything."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise RefusedAddress("This is not a valid URL.", code="invalid_url") from None
    scheme = parts.scheme.lower()
    if scheme in ("webcal", "webcals"):
        scheme = "https"
    if not parts.hostname or scheme not in ("https", "http"):
        raise RefusedAddress("Enter a full https:// address.", code="invalid_url")
    if parts.username is not None or parts.password is not None:
        raise RefusedAddress("Leave the user name and password out of the address.", code="invalid_url")
    if scheme != "https" and not private_allowed():
        raise RefusedAddress("Only https:// addresses can be used.", code="insecure_url")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def resolve(url: str) -> tuple[str, list[str]]:
    """(host, addresses) of a normalized URL, every address checked (RefusedAddress otherwise);
    TransientError when the name does not resolve at the moment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise TransientError(f"The host {host!r} could not be found.", code="unreachable") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not addresses:
        raise TransientError(f"The host {host!r} could not be found.", code="unreachable")
    if not private_allowed():
        for address in addresses:
            if not is_public(ipaddress.ip_address(address)):
                raise RefusedAddress(
                    "This address points into a private network; use a public https:// address.",
                    code="private_address",
                )
    return host, addresses


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


class _PinnedAdapter(HTTPAdapter):
    """Sends each request to the address checked for its host, never to a fresh DNS answer: the URL
    is rewritten to that literal address, and the host name kept for the Host header, TLS SNI and
    the certificate check (urllib3's `server_hostname` and `assert_hostname`)."""

    def __init__(self, pins: dict[str, str]) -> None:
        self.pins = pins
        super().__init__(max_retries=0)

    def send(self, request, *args, **kwargs):
        url = request.url or ""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if host not in self.pins:  # only SafeSession.request sends, and it checks first
            raise RefusedAddress("This address was not checked.", code="private_address")
        address = self.pins[host]
        if address != host:
            literal = f"[{address}]" if ":" in address else address
            request.headers["Host"] = parts.netloc
            request.url = urlunsplit(parts._replace(netloc=f"{literal}:{parts.port}" if parts.port else literal))
        try:
            response = super().send(request, *args, **kwargs)
        finally:
            request.url = url
        response.url = url
        return response

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        named = request.headers.get("Host")
        if named and host_params.get("scheme") == "https":
            name = urlsplit(f"//{named}").hostname or ""
            pool_kwargs.update(server_hostname=name, assert_hostname=name)
        return host_params, pool_kwargs


class SafeSession(requests.Session):
    """A requests session that reaches only checked addresses and follows redirects itself.

    Every request's URL is normalized and its host resolved and checked (`resolve`) once per session;
    the connection then goes to that address (`_PinnedAdapter`), so a second DNS answer cannot
    send it elsewhere. Redirects: at most MAX_REDIRECTS, each checked; credentials never follow
    to another origin. One session per call: it is not shared between threads.
    """

    def __init__(self, max_redirects: int = MAX_REDIRECTS, secret: bool = False) -> None:
        super().__init__()
        self.secret = secret  # the address itself is a secret: withheld from the HTTP library's log
        self.trust_env = False  # no proxy or .netrc from the environment
        self.max_redirects = max_redirects
        self.pins: dict[str, str] = {}
        adapter = _PinnedAdapter(self.pins)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def check(self, url: str) -> str:
        url = normalize(url)
        host = (urlsplit(url).hostname or "").lower()
        if host not in self.pins:
            _, addresses = resolve(url)
            self.pins[host] = sorted(addresses, key=lambda a: ":" in a)[0]  # IPv4 first
            self.pins[_as_sent(host)] = self.pins[host]  # requests sends an international name as xn--…
        return url

    def request(self, method, url, *args, **kwargs):
        withheld = _withheld.set(self.secret or _withheld.get())
        try:
            return self._follow(method, url, *args, **kwargs)
        finally:
            _withheld.reset(withheld)

    def _follow(self, method, url, *args, **kwargs):
        kwargs["allow_redirects"] = False
        for _ in range(self.max_redirects + 1):
            url = self.check(str(url))
            with quotas.acquire():  # the connection's quota, throttle mark included (CalDAV, ICS)
                response = super().request(method, url, *args, **kwargs)
            if response.status_code in (429, 503):
                quotas.throttle(_seconds(response.headers.get("Retry-After")) or 1.0)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECTS or not location:
                return response
            response.close()
            target = urljoin(url, location)
            if _origin(target) != _origin(url):  # never carry credentials to another origin
                kwargs["auth"] = None
                headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
                kwargs["headers"] = headers
            if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
                method, kwargs["data"] = "GET", None
            url = target
        raise RefusedAddress(f"More than {self.max_redirects} redirects.", code="too_many_redirects")


def _as_sent(host: str) -> str:
    """The host name as requests writes it in the URL it sends (IDNA, as `requests.models` encodes it)."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode()
    except idna.IDNAError:
        raise RefusedAddress("This is not a valid URL.", code="invalid_url") from None


def _seconds(value) -> float | None:
    """A Retry-After in its delta-seconds form, or None."""
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def network_error(exc: Exception, what: str) -> TransientError:
    """A network failure talking to `what`, as a TransientError naming no URL (it may be a secret)."""
    return TransientError(f"Network error talking to {what}: {type(exc).__name__}", code="unreachable")
