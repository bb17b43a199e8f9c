"""A fake Microsoft 365 on 127.0.0.1: the identity platform v2.0 and Microsoft Graph v1.0 calendars.

Identity: consent page, authorization code with PKCE (S256), client secret (form or Basic),
tenant in the path, refresh tokens that ROTATE (a superseded one is refused with
`invalid_grant` / AADSTS70000), `invalid_grant` for revoked grants. Graph: `me/calendars`
(paged through absolute `@odata.nextLink`), events create / get / list / patch / delete with
server-chosen opaque ids, `transactionId` de-duplication of creates, single-value extended
properties (filterable with the `singleValueExtendedProperties/Any(...)` form), 401 for unknown
or expired tokens, 403 on read-only calendars, JSON `$batch` (at most 20 requests, unique ids,
answers in shuffled order). Errors have Graph's shape `{"error": {"code", "message"}}`.
Faults are injected with `inject()` (outer requests or, with `batch_part=True`, single batch
parts) and `lose_response()`; every request is logged in `calls` / `http_requests`.
"""
import base64
import datetime as dt
import hashlib
import html
import json
import random
import re
import secrets
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

GRAPH = "https://graph.microsoft.com/"
BATCH_LIMIT = 20
DEFAULT_ACCOUNT = "member@contoso.com"
DEFAULT_CALENDARS = [
    {"name": "Calendar", "isDefaultCalendar": True, "canEdit": True},
    {"name": "Team", "canEdit": True},
    {"name": "Holidays", "canEdit": False},
]
# dateTimeTimeZone: Windows zone names plus these IANA names (Graph docs, "Additional time zones").
IANA_ZONES = set(
    """Etc/GMT+12 Etc/GMT+11 Pacific/Honolulu America/Anchorage America/Santa_Isabel America/Los_Angeles
    America/Phoenix America/Chihuahua America/Denver America/Guatemala America/Chicago America/Mexico_City
    America/Regina America/Bogota America/New_York America/Indiana/Indianapolis America/Caracas
    America/Asuncion America/Halifax America/Cuiaba America/La_Paz America/Santiago America/St_Johns
    America/Sao_Paulo America/Argentina/Buenos_Aires America/Cayenne America/Godthab America/Montevideo
    America/Bahia Etc/GMT+2 Atlantic/Azores Atlantic/Cape_Verde Africa/Casablanca Etc/GMT Europe/London
    Atlantic/Reykjavik Europe/Berlin Europe/Budapest Europe/Paris Europe/Warsaw Africa/Lagos
    Africa/Windhoek Europe/Bucharest Asia/Beirut Africa/Cairo Asia/Damascus Africa/Johannesburg
    Europe/Kyiv Europe/Kiev Europe/Istanbul Asia/Jerusalem Asia/Amman Asia/Baghdad Europe/Kaliningrad
    Asia/Riyadh Africa/Nairobi Asia/Tehran Asia/Dubai Asia/Baku Europe/Moscow Indian/Mauritius
    Asia/Tbilisi Asia/Yerevan Asia/Kabul Asia/Karachi Asia/Tashkent Asia/Toshkent Asia/Kolkata
    Asia/Colombo Asia/Kathmandu Asia/Almaty Asia/Astana Asia/Dhaka Asia/Yekaterinburg Asia/Yangon
    Asia/Rangoon Asia/Bangkok Asia/Novosibirsk Asia/Shanghai Asia/Krasnoyarsk Asia/Singapore
    Australia/Perth Asia/Taipei Asia/Ulaanbaatar Asia/Irkutsk Asia/Tokyo Asia/Seoul Australia/Adelaide
    Australia/Darwin Australia/Brisbane Australia/Sydney Pacific/Port_Moresby Australia/Hobart
    Asia/Yakutsk Pacific/Guadalcanal Asia/Vladivostok Pacific/Auckland Etc/GMT-12 Pacific/Fiji
    Asia/Magadan Pacific/Tongatapu Pacific/Apia Pacific/Kiritimati""".split()
)
FILTER_BY_PROPERTY = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'((?:[^']|'')*)'\s+and\s+\1/value\s+eq\s+'((?:[^']|'')*)'\s*\)\s*$",
    re.IGNORECASE,
)
EXPAND_PROPERTIES = re.compile(r"^\s*singleValueExtendedProperties(?:\(\s*\$filter\s*=\s*id\s+eq\s+'((?:[^']|'')*)'\s*\))?\s*$", re.IGNORECASE)
DEFAULT_CODES = {
    400: "ErrorInvalidRequest", 401: "InvalidAuthenticationToken", 403: "ErrorAccessDenied", 404: "ErrorItemNotFound",
    409: "ErrorIrresolvableConflict", 429: "ApplicationThrottled", 500: "ErrorInternalServerError",
    502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout",
}


def graph_error(status, code, message):
    return status, {"error": {"code": code, "message": message, "innerError": {"date": _now(), "request-id": str(uuid.uuid4())}}}, {}


def aad_error(status, error, code, description):
    body = {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {uuid.uuid4()} Timestamp: {_now()}",
        "error_codes": [code],
        "timestamp": _now(),
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }
    return status, body, {}


def _now():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _opaque(prefix="AAMkAGI2"):
    """An id shaped like Graph's: long, opaque, URL-safe base64 ending in '='."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(96)).decode().rstrip("=") + "AAA="


def _unquote_filter_value(value):
    return value.replace("''", "'")


class FakeMicrosoft:
    def __init__(self, port=0, client_id="test-ms-client-id", client_secret="test-ms-client-secret", tenant="common", token_lifetime=3600):
        self.client_id = client_id
        self.client_secret = client_secret
        self.tenant = tenant
        self.token_lifetime = token_lifetime
        self.page_size = 2  # me/calendars page size (Graph's real default is 10)
        self.events_page_size = 10  # events list default $top, as Graph
        self.lock = threading.RLock()
        self.latency = 0.0
        self.granted_scope = None  # override the scope string a consent grants
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = None
        self._init_state()

    def _init_state(self):
        self.accounts = {}  # email -> {"calendars": {id: cal}, "events": {id: event}, "transactions": {tid: id}}
        self.codes = {}
        self.access_tokens = {}  # token -> {"account", "expires", "family"}
        self.grants = {}  # live refresh token -> {"account", "scope", "family", "client_id"}
        self.superseded = {}  # rotated-away or revoked refresh token -> family
        self.revoked = set()  # families whose grant was revoked
        self.faults = []
        self.lost = 0
        self.calls = []  # one per logical Graph request (batch parts included): time, method, path, account, batch, status, ...
        self.http_requests = []  # one per HTTP request received: time, method, path, account
        self.max_batch_size = 0
        self.add_account(DEFAULT_ACCOUNT)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-microsoft", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def settings(self):
        """CALENDAR_SYNC entries that point the app at this server."""
        return {
            "MICROSOFT_CLIENT_ID": self.client_id,
            "MICROSOFT_CLIENT_SECRET": self.client_secret,
            "MICROSOFT_TENANT": self.tenant,
            "MICROSOFT_LOGIN_ROOT": self.url,
            "MICROSOFT_GRAPH_ROOT": f"{self.url}v1.0/",
        }

    def env(self):
        """The same, as the host project's environment variables (for worker processes)."""
        return dict(self.settings())

    # --- test controls ---------------------------------------------------------------------
    def reset(self):
        """Back to one default account; forget grants, events, faults and logged requests."""
        with self.lock:
            self.latency, self.granted_scope = 0.0, None
            self.page_size, self.events_page_size = 2, 10
            self._init_state()

    def reset_log(self):
        with self.lock:
            self.calls.clear()
            self.http_requests.clear()
            self.max_batch_size = 0

    def add_account(self, email, calendars=None):
        """Add a mailbox. `calendars`: list of {"name", "canEdit", "isDefaultCalendar"?, "id"?}; the first is default if none says so."""
        specs = [dict(c) for c in (calendars or DEFAULT_CALENDARS)]
        if not any(c.get("isDefaultCalendar") for c in specs):
            specs[0]["isDefaultCalendar"] = True
        cals = {}
        for spec in specs:
            cal_id = spec.get("id") or _opaque("AAMkADAw")
            cals[cal_id] = {
                "id": cal_id,
                "name": spec["name"],
                "color": "auto",
                "hexColor": "",
                "isDefaultCalendar": bool(spec.get("isDefaultCalendar")),
                "changeKey": secrets.token_urlsafe(16),
                "canShare": bool(spec.get("canEdit", True)),
                "canViewPrivateItems": True,
                "canEdit": bool(spec.get("canEdit", True)),
                "allowedOnlineMeetingProviders": ["teamsForBusiness"],
                "defaultOnlineMeetingProvider": "teamsForBusiness",
                "isTallyingResponses": True,
                "isRemovable": not spec.get("isDefaultCalendar"),
                "owner": {"name": email.split("@")[0].title(), "address": email},
            }
        with self.lock:
            self.accounts[email] = {"calendars": cals, "events": {}, "transactions": {}}
        return email

    def calendar_id(self, account=DEFAULT_ACCOUNT, name=None):
        """Id of the calendar called `name` (the default calendar when None)."""
        with self.lock:
            for cal in self.accounts[account]["calendars"].values():
                if (name is None and cal["isDefaultCalendar"]) or cal["name"] == name:
                    return cal["id"]
        raise KeyError(name)

    def inject(self, status, times=1, path="/v1.0/", retry_after=None, code=None, delay=0.0, batch_part=False):
        """The next `times` requests whose path starts with `path` get `status` instead.

        `batch_part=True` hits single sub-requests of `$batch` (path as `/v1.0/me/...`)
        instead of whole HTTP requests; 429 and 503 carry `Retry-After` when given.
        """
        with self.lock:
            self.faults.append(
                {"status": status, "times": times, "path": path, "retry_after": retry_after, "code": code, "delay": delay, "batch_part": batch_part}
            )

    def lose_response(self, times=1):
        """The next `times` HTTP requests that create an event are committed, then the connection drops unanswered."""
        with self.lock:
            self.lost += times

    def expire_access_tokens(self):
        with self.lock:
            for info in self.access_tokens.values():
                info["expires"] = 0

    def revoke_grants(self, account):
        """Like revoking the user's sessions: refresh tokens die; with CAE, so do access tokens."""
        with self.lock:
            for token, grant in list(self.grants.items()):
                if grant["account"] == account:
                    self.revoked.add(grant["family"])
                    self.superseded[token] = grant["family"]
                    del self.grants[token]
            for token, info in list(self.access_tokens.items()):
                if info["account"] == account:
                    del self.access_tokens[token]

    def remove_event(self, event_id, account=DEFAULT_ACCOUNT):
        """Delete an event behind the app's back (the member deleting it in Outlook)."""
        with self.lock:
            event = self.accounts[account]["events"].pop(event_id)
            self.accounts[account]["transactions"].pop(event.get("transactionId"), None)

    def events(self, account=DEFAULT_ACCOUNT, calendar_id=None):
        """{event_id: event} of one calendar (the default one by default), extended properties included."""
        with self.lock:
            cal = calendar_id or self.calendar_id(account)
            events = self.accounts[account]["events"].values()
            return {e["id"]: json.loads(json.dumps({k: v for k, v in e.items() if not k.startswith("_")})) for e in events if e["_calendar"] == cal}

    def graph_calls(self, account=None):
        return [c for c in self.calls if account is None or c["account"] == account]

    def graph_http_requests(self, account=None):
        """How many HTTP requests reached Graph (a `$batch` counts once)."""
        with self.lock:
            return sum(1 for r in self.http_requests if r["path"].startswith("/v1.0/") and (account is None or r["account"] == account))

    def consent(self, authorization_url, account=DEFAULT_ACCOUNT, allow=True):
        """Act as the member: load the consent page, press Allow (or Deny); return the redirect Location."""
        page = requests.get(authorization_url, timeout=10)
        page.raise_for_status()
        action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        fields = {html.unescape(k): html.unescape(v) for k, v in fields.items()}
        response = requests.post(
            urllib.parse.urljoin(authorization_url, html.unescape(action)),
            data={**fields, "login_hint": account, "decision": "allow" if allow else "deny"},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    # --- internals ---------------------------------------------------------------------------
    def _take_fault(self, path, batch_part):
        with self.lock:
            for fault in self.faults:
                if fault["times"] > 0 and fault["batch_part"] == batch_part and path.startswith(fault["path"]):
                    fault["times"] -= 1
                    return fault
        return None

    def _fault_answer(self, fault, path):
        if fault["delay"]:
            time.sleep(fault["delay"])
        status = fault["status"]
        extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
        if "/oauth2/" in path:
            error = fault["code"] or ("temporarily_unavailable" if status >= 500 or status == 429 else "invalid_request")
            status_, body, _ = aad_error(status, error, 50000 if status >= 500 else 90000, "Injected fault.")
            return status_, body, extra
        status_, body, _ = graph_error(status, fault["code"] or DEFAULT_CODES.get(status, "UnknownError"), "Injected fault.")
        return status_, body, extra

    def _account_for(self, authorization):
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        with self.lock:
            info = self.access_tokens.get(token)
            if info is None or info["expires"] < time.time():
                return None, bool(info)
            return info["account"], False

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, payload=None, headers=None, raw=None, content_type="application/json; odata.metadata=minimal"):
                data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", str(uuid.uuid4()))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                headers = {k.lower(): v for k, v in self.headers.items()}
                account = fake._account_for(headers.get("authorization", ""))[0] if path.startswith("/v1.0/") else None
                with fake.lock:
                    fake.http_requests.append({"time": time.time(), "method": method, "path": path, "account": account})
                if fake.latency:
                    time.sleep(fake.latency)
                fault = fake._take_fault(path, batch_part=False)
                if fault:
                    status, payload, extra = fake._fault_answer(fault, path)
                    if path.startswith("/v1.0/"):
                        with fake.lock:
                            fake.calls.append({"time": time.time(), "method": method, "path": path, "account": account, "batch": False, "status": status})
                elif path == "/v1.0/$batch" and method == "POST":
                    status, payload, extra = fake._batch(headers, body)
                else:
                    status, payload, extra = fake.dispatch(method, self.path, headers, body)
                if extra.pop("_created", False) and fake._lose():
                    self.close_connection = True  # committed, but the client never hears back
                    return
                if isinstance(payload, tuple):  # (content type, raw bytes)
                    return self._send(status, raw=payload[1], content_type=payload[0], headers=extra)
                self._send(status, payload, headers=extra)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def do_PATCH(self):
                self._handle("PATCH")

            def do_PUT(self):
                self._handle("PUT")

            def do_DELETE(self):
                self._handle("DELETE")

        return Handler

    def _lose(self):
        with self.lock:
            if self.lost > 0:
                self.lost -= 1
                return True
        return False

    # --- request routing ----------------------------------------------------------------------
    def dispatch(self, method, target, headers, body, batch=False):
        """Answer one request (plain, or one part of a batch): (status, payload, extra headers)."""
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path, dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if path.startswith("/v1.0/"):
            account, expired = self._account_for(headers.get("authorization", ""))
            call = {"time": time.time(), "method": method, "path": path, "account": account, "batch": batch, "query": query}
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                payload = ValueError
            if isinstance(payload, dict) and payload.get("transactionId"):
                call["transactionId"] = payload["transactionId"]
            if account is None:
                message = "Lifetime validation failed, the token is expired." if expired else "IDX14100: JWT is not well formed, there are no dots (.)."
                status, answer, extra = graph_error(401, "InvalidAuthenticationToken", message)
                extra["WWW-Authenticate"] = 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token"'
            elif payload is ValueError:
                status, answer, extra = graph_error(400, "BadRequest", "Unable to read JSON request payload.")
            else:
                status, answer, extra = self._graph(method, path.removeprefix("/v1.0/"), query, payload, account)
            call["status"] = status
            with self.lock:
                self.calls.append(call)
            return status, answer, extra
        segments = path.strip("/").split("/")
        if len(segments) >= 4 and segments[1:3] == ["oauth2", "v2.0"]:
            tenant, action = urllib.parse.unquote(segments[0]), "/".join(segments[3:])
            form = dict(urllib.parse.parse_qsl(body.decode())) if body else {}
            if action == "authorize" and method == "GET":
                return self._consent_page(tenant, query)
            if action == "decision" and method == "POST":
                return self._decide(tenant, form)
            if action == "token" and method == "POST":
                return self._token(tenant, form, headers)
        return graph_error(404, "UnknownError", "Resource not found.")

    # --- identity platform --------------------------------------------------------------------
    def _tenant_error(self, tenant):
        if tenant == self.tenant:
            return None
        if self.tenant in ("common", "organizations") and tenant in ("common", "organizations"):
            return None
        if tenant in ("common", "organizations", "consumers"):
            return aad_error(400, "invalid_request", 50194, f"Application '{self.client_id}' is not configured as a multi-tenant application. Use a tenant-specific endpoint.")
        return aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")

    def _consent_page(self, tenant, q):
        problem = self._tenant_error(tenant)
        if problem:
            problem = problem[1]["error_description"]
        elif q.get("client_id") != self.client_id:
            problem = f"AADSTS700016: Application with identifier '{q.get('client_id')}' was not found in the directory."
        elif q.get("response_type") != "code":
            problem = "AADSTS900144: The request body must contain the following parameter: 'response_type'."
        elif not q.get("redirect_uri"):
            problem = "AADSTS900144: The request body must contain the following parameter: 'redirect_uri'."
        elif not q.get("scope"):
            problem = "AADSTS900144: The request body must contain the following parameter: 'scope'."
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problem = "AADSTS501491: Invalid size of Code_Challenge parameter (PKCE with S256 is required here)."
        if problem:
            return 400, ("text/html; charset=utf-8", f"<!doctype html><title>Sign in to your account</title><p>{html.escape(problem)}</p>".encode()), {}
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in q.items())
        accounts = "".join(f'<option value="{html.escape(a)}">{html.escape(a)}</option>' for a in self.accounts)
        scopes = "".join(f"<li>{html.escape(s)}</li>" for s in q["scope"].split())
        page = (
            "<!doctype html><title>Permissions requested (fake Microsoft)</title>"
            f"<h1>Permissions requested</h1><p>This app would like to:</p><ul>{scopes}</ul>"
            f'<form method="post" action="/{html.escape(urllib.parse.quote(tenant))}/oauth2/v2.0/decision">{hidden}'
            f'<label>Account <select name="login_hint">{accounts}</select></label> '
            '<button name="decision" value="allow" id="allow">Accept</button> '
            '<button name="decision" value="deny" id="deny">Cancel</button></form>'
        )
        return 200, ("text/html; charset=utf-8", page.encode()), {}

    def _decide(self, tenant, form):
        page = self._consent_page(tenant, {k: v for k, v in form.items() if k not in ("decision", "login_hint")})
        if page[0] != 200:
            return page
        redirect = form.get("redirect_uri", "")
        params = {}
        if form.get("decision") != "allow":
            params.update(error="access_denied", error_description="AADSTS65004: User declined to consent to access the app.")
        else:
            code = "0.AXEA" + secrets.token_urlsafe(48)
            with self.lock:
                account = form.get("login_hint") or DEFAULT_ACCOUNT
                if account not in self.accounts:
                    self.add_account(account)
                self.codes[code] = {
                    "account": account,
                    "tenant": tenant,
                    "redirect_uri": redirect,
                    "challenge": form.get("code_challenge"),
                    "scope": form.get("scope", ""),
                    "client_id": form.get("client_id"),
                    "expires": time.time() + 600,
                }
            params["code"] = code
        if form.get("state"):
            params["state"] = form["state"]
        separator = "&" if "?" in redirect else "?"
        return 302, None, {"Location": f"{redirect}{separator}{urllib.parse.urlencode(params)}"}

    def _client(self, form, headers):
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:]).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            basic_id, _, basic_secret = decoded.partition(":")
            client_id, client_secret = urllib.parse.unquote_plus(basic_id), urllib.parse.unquote_plus(basic_secret)
        if client_id != self.client_id:
            return aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was not found in the directory.")
        if client_secret != self.client_secret:
            return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        return None

    def _granted_scope(self, requested):
        if self.granted_scope is not None:
            return self.granted_scope
        names = [s.removeprefix(GRAPH) for s in requested.split() if s.lower() not in ("offline_access", "openid", "profile", "email")]
        names += [] if any(n.lower() == "user.read" for n in names) else ["User.Read"]
        return " ".join(GRAPH + n for n in names)

    def _issue(self, account, scope, family, with_refresh):
        access = "eyJ0eXAiOiJKV1QiLCJub25jZSI6ImZha2UiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(96) + "." + secrets.token_urlsafe(32)
        self.access_tokens[access] = {"account": account, "expires": time.time() + self.token_lifetime, "family": family}
        answer = {"token_type": "Bearer", "scope": self._granted_scope(scope), "expires_in": self.token_lifetime, "ext_expires_in": self.token_lifetime, "access_token": access}
        if with_refresh:
            refresh = "1.AXEA" + secrets.token_urlsafe(180)
            self.grants[refresh] = {"account": account, "scope": scope, "family": family, "client_id": self.client_id}
            answer["refresh_token"] = refresh
        return 200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"}

    def _token(self, tenant, form, headers):
        problem = self._tenant_error(tenant) or self._client(form, headers)
        if problem:
            return problem
        grant_type = form.get("grant_type")
        with self.lock:
            if grant_type == "authorization_code":
                code = self.codes.pop(form.get("code", ""), None)
                if code is None or code["expires"] < time.time():
                    return aad_error(400, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed or is invalid.")
                if code["redirect_uri"] != form.get("redirect_uri"):
                    return aad_error(400, "invalid_grant", 50148, "The redirect_uri does not match the one used in the authorization request.")
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if not verifier or challenge != code["challenge"]:
                    return aad_error(400, "invalid_grant", 501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request.")
                with_refresh = "offline_access" in [s.lower() for s in code["scope"].split()]
                return self._issue(code["account"], code["scope"], secrets.token_hex(8), with_refresh)
            if grant_type == "refresh_token":
                token = form.get("refresh_token", "")
                grant = self.grants.get(token)
                if grant is None:
                    family = self.superseded.get(token)
                    if family is None:
                        return aad_error(400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
                    if family in self.revoked:
                        return aad_error(400, "invalid_grant", 50173, "The provided grant has expired due to it being revoked.")
                    return aad_error(400, "invalid_grant", 70000, "The provided value for the 'refresh_token' is not valid: it was superseded by a newer token.")
                del self.grants[token]  # rotation: the superseded token stops working
                self.superseded[token] = grant["family"]
                return self._issue(grant["account"], form.get("scope") or grant["scope"], grant["family"], True)
        return aad_error(400, "unsupported_grant_type", 70003, f"The app requested an unsupported grant type '{grant_type}'.")

    # --- Graph --------------------------------------------------------------------------------
    def _page(self, items, path, query, size):
        """One page of `items` with an absolute `@odata.nextLink` ($skiptoken) when more remain."""
        try:
            start = int(base64.urlsafe_b64decode(query.get("$skiptoken", "") + "==").decode() or 0)
            size = max(1, min(int(query.get("$top") or size), 1000))
        except ValueError:
            return graph_error(400, "BadRequest", "Invalid $skiptoken or $top.")
        answer = {"@odata.context": f"{GRAPH}v1.0/$metadata#{path}", "value": items[start : start + size]}
        if start + size < len(items):
            rest = {k: v for k, v in query.items() if k != "$skiptoken"}
            rest["$skiptoken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
            answer["@odata.nextLink"] = f"{self.url}v1.0/{path}?{urllib.parse.urlencode(rest, quote_via=urllib.parse.quote, safe='$')}"
        return 200, answer, {}

    @staticmethod
    def _select(item, query):
        if not query.get("$select"):
            return item
        keep = {f.strip().lower() for f in query["$select"].split(",")} | {"id", "@odata.etag"}
        return {k: v for k, v in item.items() if k.lower() in keep}

    def _graph(self, method, path, query, body, account):
        segments = [urllib.parse.unquote(s) for s in path.strip("/").split("/")]
        if segments[:1] != ["me"]:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{segments[0]}'.")
        mailbox = self.accounts[account]
        rest = segments[1:]
        with self.lock:
            if rest == ["calendars"] and method == "GET":
                items = [self._select(c, query) for c in mailbox["calendars"].values()]
                return self._page(items, "me/calendars", query, self.page_size)
            if rest[:1] == ["calendar"]:  # the default calendar's alias
                rest = ["calendars", self.calendar_id(account)] + rest[1:]
            if rest[:1] == ["events"]:
                rest = ["calendars", None] + rest
            if len(rest) < 2 or rest[0] != "calendars":
                return graph_error(400, "BadRequest", f"Resource not found for the segment '{'/'.join(rest)}'.")
            cal_id = rest[1] or self.calendar_id(account)
            calendar = mailbox["calendars"].get(cal_id)
            if calendar is None:
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            scoped = rest[1] is not None
            if len(rest) == 2 and method == "GET":
                return 200, self._select(calendar, query), {}
            if len(rest) < 3 or rest[2] != "events" or len(rest) > 4:
                return graph_error(400, "BadRequest", "Unsupported segment.")
            if len(rest) == 3:
                if method == "GET":
                    return self._list_events(mailbox, cal_id, path, query)
                if method == "POST":
                    return self._create(mailbox, calendar, body)
                return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")
            event = mailbox["events"].get(rest[3])
            if event is None or (scoped and event["_calendar"] != cal_id):
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            if method == "GET":
                return 200, self._view(event, query), {}
            if method in ("PATCH", "DELETE") and not mailbox["calendars"][event["_calendar"]]["canEdit"]:
                return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
            if method == "PATCH":
                return self._patch(event, body)
            if method == "DELETE":
                del mailbox["events"][event["id"]]
                if event.get("transactionId"):
                    mailbox["transactions"].pop(event["transactionId"], None)
                return 204, None, {}
        return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")

    def _view(self, event, query):
        """An event as Graph returns it: extended properties only when $expand-ed."""
        item = {k: v for k, v in event.items() if not k.startswith("_") and k != "singleValueExtendedProperties"}
        expand = query.get("$expand")
        if expand:
            match = EXPAND_PROPERTIES.match(expand)
            if match:
                wanted = _unquote_filter_value(match.group(1)).lower() if match.group(1) is not None else None
                props = [p for p in event.get("singleValueExtendedProperties", []) if wanted is None or p["id"].lower() == wanted]
                if props:
                    item["singleValueExtendedProperties"] = props
        selected = self._select(item, query)
        if "singleValueExtendedProperties" in item:
            selected["singleValueExtendedProperties"] = item["singleValueExtendedProperties"]
        return selected

    def _list_events(self, mailbox, cal_id, path, query):
        items = [e for e in mailbox["events"].values() if e["_calendar"] == cal_id]
        if query.get("$filter"):
            match = FILTER_BY_PROPERTY.match(query["$filter"])
            if not match:
                return graph_error(400, "ErrorInvalidUrlQueryFilter", "The query filter contains one or more invalid nodes.")
            prop_id, value = _unquote_filter_value(match.group(2)).lower(), _unquote_filter_value(match.group(3))
            items = [e for e in items if any(p["id"].lower() == prop_id and p["value"] == value for p in e.get("singleValueExtendedProperties", []))]
        if query.get("$expand") and not EXPAND_PROPERTIES.match(query["$expand"]):
            return graph_error(400, "BadRequest", "Parsing OData Select and Expand failed.")
        items.sort(key=lambda e: e["createdDateTime"])
        return self._page([self._view(e, query) for e in items], path, query, self.events_page_size)

    def _check_event(self, body, creating):
        if not isinstance(body, dict):
            return graph_error(400, "BadRequest", "Empty Payload. JSON content expected.")
        for field in ("start", "end"):
            value = body.get(field)
            if value is None and not creating:
                continue
            if not isinstance(value, dict) or not value.get("dateTime") or not value.get("timeZone"):
                return graph_error(400, "ErrorInvalidRequest", f"Your request can't be completed. The '{field}' property needs dateTime and timeZone.")
            zone = value["timeZone"]
            if zone not in IANA_ZONES and zone != "UTC" and not zone.endswith(" Time"):
                return graph_error(400, "TimeZoneNotSupportedException", f"A valid TimeZone value must be specified. The following TimeZone value is not supported: '{zone}'.")
            try:
                dt.datetime.fromisoformat(value["dateTime"][:26])
            except ValueError:
                return graph_error(400, "ErrorInvalidRequest", f"Cannot convert the literal '{value['dateTime']}' to the expected type 'Edm.DateTime'.")
        for prop in body.get("singleValueExtendedProperties") or []:
            if not isinstance(prop, dict) or not re.match(r"^String \{[0-9a-fA-F-]{36}\} Name \S+$", str(prop.get("id", ""))) or not isinstance(prop.get("value"), str):
                return graph_error(400, "ErrorInvalidExtendedPropertyValue", "The extended property id or value is not valid.")
        return None

    def _create(self, mailbox, calendar, body):
        problem = self._check_event(body, creating=True)
        if problem:
            return problem
        if not calendar["canEdit"]:
            return graph_error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        tid = body.get("transactionId")
        if tid and mailbox["transactions"].get(tid) in mailbox["events"]:  # a retried create: answer with the event already made
            event = mailbox["events"][mailbox["transactions"][tid]]
            return 201, self._view(event, {}), {"_created": True}
        now = _now()
        event = {
            "@odata.etag": f'W/"{secrets.token_urlsafe(24)}"',
            "id": _opaque(),
            "createdDateTime": now,
            "lastModifiedDateTime": now,
            "changeKey": secrets.token_urlsafe(24),
            "iCalUId": "040000008200E00074C5B7101A82E008" + secrets.token_hex(28).upper(),
            "subject": "",
            "body": {"contentType": "text", "content": ""},
            "importance": "normal",
            "sensitivity": "normal",
            "isAllDay": False,
            "isCancelled": False,
            "isOrganizer": True,
            "isReminderOn": True,
            "reminderMinutesBeforeStart": 15,
            "showAs": "busy",
            "type": "singleInstance",
            "location": {"displayName": ""},
            "attendees": [],
            "organizer": {"emailAddress": dict(calendar["owner"])},
            "webLink": "https://outlook.office365.com/owa/?itemid=fake&exvsurl=1&path=/calendar/item",
        }
        event.update({k: v for k, v in body.items() if k not in ("id", "@odata.etag", "createdDateTime", "lastModifiedDateTime")})
        event["_calendar"] = calendar["id"]
        mailbox["events"][event["id"]] = event
        if tid:
            mailbox["transactions"][tid] = event["id"]
        return 201, self._view(event, {}), {"_created": True}

    def _patch(self, event, body):
        problem = self._check_event(body, creating=False)
        if problem:
            return problem
        if "transactionId" in body and body["transactionId"] != event.get("transactionId"):
            return graph_error(400, "ErrorInvalidRequest", "The transactionId of an event can't be changed once set.")
        body = dict(body)
        props = {p["id"].lower(): p for p in event.get("singleValueExtendedProperties", [])}
        for prop in body.pop("singleValueExtendedProperties", None) or []:
            props[prop["id"].lower()] = prop
        for key in ("id", "@odata.etag", "createdDateTime", "lastModifiedDateTime", "_calendar"):
            body.pop(key, None)
        event.update(body)
        if props:
            event["singleValueExtendedProperties"] = list(props.values())
        event.update({"lastModifiedDateTime": _now(), "changeKey": secrets.token_urlsafe(24), "@odata.etag": f'W/"{secrets.token_urlsafe(24)}"'})
        return 200, self._view(event, {}), {}

    # --- JSON batching ------------------------------------------------------------------------
    def _batch(self, headers, raw):
        if self._account_for(headers.get("authorization", ""))[0] is None:
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty or invalid.")
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to read JSON request payload.")
        requests_ = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(requests_, list) or not requests_:
            return graph_error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests_) > BATCH_LIMIT:
            return graph_error(400, "BadRequest", f"Number of requests exceeds the maximum of {BATCH_LIMIT}.")
        ids = [str(r.get("id", "")).lower() for r in requests_ if isinstance(r, dict)]
        if len(ids) != len(requests_) or "" in ids or len(set(ids)) != len(ids):
            return graph_error(400, "BadRequest", "Batch request ids must be present and unique (case-insensitive).")
        for r in requests_:
            if not r.get("method") or not r.get("url"):
                return graph_error(400, "BadRequest", "Each request needs a method and a url.")
            if "body" in r and not any(k.lower() == "content-type" for k in (r.get("headers") or {})):
                return graph_error(400, "BadRequest", "Write request id : " + str(r["id"]) + " does not contain Content-Type header or body.")
        with self.lock:
            self.max_batch_size = max(self.max_batch_size, len(requests_))
        responses, created = [], False
        for r in requests_:
            url = str(r["url"])
            part_headers = {k.lower(): str(v) for k, v in (r.get("headers") or {}).items()}
            part_headers.setdefault("authorization", headers.get("authorization", ""))
            if "://" in url:
                status, body, extra = graph_error(400, "BadRequest", "Invalid request URL: it must be relative.")
            else:
                target = "/v1.0/" + url.lstrip("/")
                fault = self._take_fault(urllib.parse.urlsplit(target).path, batch_part=True)
                if fault:
                    status, body, extra = self._fault_answer(fault, target)
                    with self.lock:
                        self.calls.append({"time": time.time(), "method": r["method"].upper(), "path": urllib.parse.urlsplit(target).path,
                                           "account": self._account_for(part_headers["authorization"])[0], "batch": True, "status": status,
                                           "transactionId": (r.get("body") or {}).get("transactionId") if isinstance(r.get("body"), dict) else None})
                else:
                    data = json.dumps(r["body"]).encode() if "body" in r else b""
                    status, body, extra = self.dispatch(r["method"].upper(), target, part_headers, data, batch=True)
            created = extra.pop("_created", False) or created
            answer = {"id": str(r["id"]), "status": status, "headers": dict(extra)}
            if body is not None:
                answer["headers"].setdefault("Content-Type", "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8")
                answer["body"] = body
            responses.append(answer)
        random.shuffle(responses)  # Graph answers in any order
        return 200, {"responses": responses}, {"_created": created}

