"""A fake Google on 127.0.0.1 that behaves like Google where it matters to a calendar sync.

OAuth: consent page, authorization code with PKCE (S256), refresh grant, `invalid_grant`
for revoked or unknown grants, revoke. Calendar v3: calendarList, events insert / get /
list / patch / delete, client-chosen ids (409 `duplicate` when taken, even by a cancelled
event), 410 on deleting a deleted event, 401 on expired tokens, batch requests
(multipart/mixed, at most 50 parts). Faults are injected with `inject()`; every call is
recorded in `calls` so tests can count requests and check rate limits.
"""
import base64
import hashlib
import html
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections import defaultdict
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

EVENT_ID = re.compile(r"^[0-9a-v]{5,1024}$")
DEFAULT_SCOPES = "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.readonly"
BATCH_LIMIT = 50


def _error(status, reason, message):
    return status, {"error": {"code": status, "message": message, "errors": [{"domain": "global", "reason": reason, "message": message}]}}


class FakeGoogle:
    def __init__(self, port=0, client_id="test-client-id", client_secret="test-client-secret", token_lifetime=3600):
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = token_lifetime
        self.lock = threading.RLock()
        self.accounts = {}
        self.codes = {}
        self.access_tokens = {}  # token -> {"account", "expires", "grant"}
        self.grants = {}  # refresh token -> {"account", "scope"}
        self.faults = []
        self.latency = 0.0
        self.calls = []  # one dict per logical request: time, method, path, account, batch
        self.http_requests = []  # one dict per HTTP request received
        self.granted_scope = None  # override the scope a consent grants
        self._ids = itertools.count(1)
        self.add_account("member@example.com")
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-google", daemon=True)
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
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
            "GOOGLE_OAUTH_AUTH_URI": f"{self.url}o/oauth2/auth",
            "GOOGLE_OAUTH_TOKEN_URI": f"{self.url}token",
            "GOOGLE_OAUTH_REVOKE_URI": f"{self.url}revoke",
            "GOOGLE_API_ROOT": self.url,
        }

    def env(self):
        """The same, as the host project's environment variables (for worker processes)."""
        return {
            "GOOGLE_CLIENT_ID": self.client_id,
            "GOOGLE_CLIENT_SECRET": self.client_secret,
            "GOOGLE_OAUTH_AUTH_URI": f"{self.url}o/oauth2/auth",
            "GOOGLE_OAUTH_TOKEN_URI": f"{self.url}token",
            "GOOGLE_OAUTH_REVOKE_URI": f"{self.url}revoke",
            "GOOGLE_API_ROOT": self.url,
        }

    # --- test controls ---------------------------------------------------------------------
    def reset(self):
        """Forget every account, grant, event, fault and logged call (between tests)."""
        with self.lock:
            self.accounts.clear()
            self.codes.clear()
            self.access_tokens.clear()
            self.grants.clear()
            self.faults.clear()
            self.calls.clear()
            self.http_requests.clear()
            self.latency, self.granted_scope = 0.0, None
            self.add_account("member@example.com")

    def add_account(self, email, calendars=None):
        with self.lock:
            cals = {email: {"summary": email, "accessRole": "owner", "primary": True}}
            cals.update(
                calendars
                or {
                    "team@group.calendar.google.com": {"summary": "Team", "accessRole": "writer"},
                    "holidays@group.v.calendar.google.com": {"summary": "Holidays", "accessRole": "reader"},
                }
            )
            self.accounts[email] = {"calendars": cals, "events": defaultdict(dict)}
        return email

    def inject(self, status, times=1, path="/calendar/", retry_after=None, reason=None, delay=0.0):
        """The next `times` requests whose path starts with `path` get `status` instead."""
        with self.lock:
            self.faults.append({"status": status, "times": times, "path": path, "retry_after": retry_after, "reason": reason, "delay": delay})

    def expire_access_tokens(self):
        with self.lock:
            for info in self.access_tokens.values():
                info["expires"] = 0

    def revoke_grants(self, account):
        with self.lock:
            for token in [t for t, g in self.grants.items() if g["account"] == account]:
                self._revoke_grant(token)

    def events(self, account, calendar_id=None, include_cancelled=False):
        """{event_id: event} of an account's calendar (primary by default)."""
        with self.lock:
            cal = self._calendar_id(account, calendar_id or "primary")
            items = self.accounts[account]["events"].get(cal, {})
            return {k: dict(v) for k, v in items.items() if include_cancelled or v["status"] != "cancelled"}

    def api_calls(self, account=None):
        return [c for c in self.calls if c["path"].startswith("/calendar/") and (account is None or c["account"] == account)]

    def max_calls_in_window(self, account, seconds):
        times = sorted(c["time"] for c in self.api_calls(account))
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def reset_log(self):
        with self.lock:
            self.calls.clear()
            self.http_requests.clear()

    def consent(self, authorization_url, account="member@example.com", allow=True):
        """Act as the member on the consent page: load it, press Allow (or Deny); return the redirect."""
        page = requests.get(authorization_url, timeout=10)
        page.raise_for_status()
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorization_url).query))
        response = requests.post(
            f"{self.url}o/oauth2/auth/decision",
            data={**query, "account": account, "decision": "allow" if allow else "deny"},
            allow_redirects=False,
            timeout=10,
        )
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    # --- internals ---------------------------------------------------------------------------
    def _calendar_id(self, account, calendar_id):
        return account if calendar_id == "primary" else calendar_id

    def _take_fault(self, path):
        with self.lock:
            for fault in self.faults:
                if fault["times"] > 0 and path.startswith(fault["path"]):
                    fault["times"] -= 1
                    return fault
        return None

    def _new_token(self, prefix):
        return f"{prefix}{secrets.token_urlsafe(24)}"

    def _revoke_grant(self, refresh_token):
        self.grants.pop(refresh_token, None)
        for token in [t for t, i in self.access_tokens.items() if i["grant"] == refresh_token]:
            del self.access_tokens[token]

    def _issue_access(self, refresh_token):
        token = self._new_token("ya29.fake-")
        self.access_tokens[token] = {"account": self.grants[refresh_token]["account"], "expires": time.time() + self.token_lifetime, "grant": refresh_token}
        return token

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status, payload=None, headers=None, raw=None, content_type="application/json"):
                data = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
                self.send_response(status)
                if data or status != 204:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                body = self._body()
                parts = urllib.parse.urlsplit(self.path)
                with fake.lock:
                    fake.http_requests.append({"time": time.time(), "method": method, "path": parts.path})
                if fake.latency:
                    time.sleep(fake.latency)
                if parts.path == "/batch/calendar/v3" and method == "POST":
                    return self._batch(body)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = fake.dispatch(method, self.path, headers, body)
                if isinstance(payload, tuple):  # (content type, raw bytes)
                    return self._send(status, raw=payload[1], content_type=payload[0], headers=extra)
                self._send(status, payload, headers=extra)

            def _batch(self, body):
                content_type = self.headers.get("Content-Type", "")
                message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
                parts = list(message.iter_parts())
                if len(parts) > BATCH_LIMIT:
                    return self._send(*_error(400, "tooManyRequests", f"A batch may hold at most {BATCH_LIMIT} requests."))
                boundary = "batch_" + secrets.token_hex(8)
                out = []
                for part in parts:
                    raw = part.get_payload(decode=True)
                    head, sub_body = (re.split(rb"\r?\n\r?\n", raw, maxsplit=1) + [b""])[:2]
                    lines = re.split(r"\r?\n", head.decode())
                    method, path, _ = lines[0].split(" ", 2)
                    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
                    # Like Google: the outer request's headers apply to parts that don't set them.
                    headers.setdefault("authorization", self.headers.get("Authorization", ""))
                    status, payload, extra = fake.dispatch(method, path, headers, sub_body, batch=True)
                    data = b"" if payload is None else json.dumps(payload).encode()
                    reason = HTTPStatus(status).phrase
                    extra_lines = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
                    out.append(
                        f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{part['Content-ID'].strip('<>')}>\r\n\r\n"
                        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\n{extra_lines}Content-Length: {len(data)}\r\n\r\n".encode()
                        + data
                        + b"\r\n"
                    )
                raw = b"".join(out) + f"--{boundary}--\r\n".encode()
                self._send(200, raw=raw, content_type=f"multipart/mixed; boundary={boundary}")

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

    # --- request routing (shared by plain and batched requests) ------------------------------
    def dispatch(self, method, target, headers, body, batch=False):
        parts = urllib.parse.urlsplit(target)
        path, query = parts.path, dict(urllib.parse.parse_qsl(parts.query))
        fault = self._take_fault(path)
        account, expires = None, 0
        if path.startswith("/calendar/"):
            token = headers.get("authorization", "").removeprefix("Bearer ").strip()
            with self.lock:
                info = self.access_tokens.get(token)
                account, expires = (info["account"], info["expires"]) if info else (None, 0)
                self.calls.append({"time": time.time(), "method": method, "path": path, "account": account, "batch": batch, "query": query})
        if fault:
            if fault["delay"]:
                time.sleep(fault["delay"])
            extra = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
            reason = fault["reason"] or {429: "rateLimitExceeded", 403: "rateLimitExceeded"}.get(fault["status"], "backendError")
            if path == "/token":
                return fault["status"], {"error": "internal_failure" if fault["status"] >= 500 else reason}, extra
            return (*_error(fault["status"], reason, "Injected fault"), extra)
        form = dict(urllib.parse.parse_qsl(body.decode())) if body and not path.startswith("/calendar/") else {}
        if path == "/o/oauth2/auth" and method == "GET":
            return self._consent_page(query)
        if path == "/o/oauth2/auth/decision" and method == "POST":
            return self._decide(form)
        if path == "/token" and method == "POST":
            return self._token(form, headers)
        if path == "/revoke" and method == "POST":
            return self._revoke({**query, **form})
        if path.startswith("/calendar/v3/"):
            if account is None or expires < time.time():
                return (*_error(401, "authError", "Request had invalid authentication credentials."), {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'})
            return (*self._calendar(method, path.removeprefix("/calendar/v3/"), query, body, account), {})
        return (*_error(404, "notFound", "Not Found"), {})

    # --- OAuth ------------------------------------------------------------------------------
    def _consent_page(self, q):
        problem = None
        if q.get("client_id") != self.client_id:
            problem = "invalid_client"
        elif q.get("response_type") != "code" or not q.get("redirect_uri"):
            problem = "invalid_request"
        elif q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            problem = "invalid_request: PKCE S256 required"
        if problem:
            return 400, ("text/html", f"<h1>Error 400: {html.escape(problem)}</h1>".encode()), {}
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in q.items())
        accounts = "".join(f'<option value="{html.escape(a)}">{html.escape(a)}</option>' for a in self.accounts)
        page = (
            "<!doctype html><title>Sign in - Google Accounts (fake)</title>"
            "<h1>Fake Google</h1><p>ManageHub wants to manage events in your calendars.</p>"
            f'<form method="post" action="/o/oauth2/auth/decision">{hidden}'
            f'<label>Account <select name="account">{accounts}</select></label> '
            '<button name="decision" value="allow" id="allow">Allow</button> '
            '<button name="decision" value="deny" id="deny">Deny</button></form>'
        )
        return 200, ("text/html; charset=utf-8", page.encode()), {}

    def _decide(self, form):
        redirect = form.get("redirect_uri", "")
        params = {"state": form.get("state", "")}
        if form.get("decision") != "allow":
            params["error"] = "access_denied"
        else:
            code = self._new_token("4/fake-code-")
            scope = self.granted_scope if self.granted_scope is not None else form.get("scope", DEFAULT_SCOPES)
            with self.lock:
                account = form.get("account") or "member@example.com"
                if account not in self.accounts:
                    self.add_account(account)
                self.codes[code] = {
                    "account": account,
                    "redirect_uri": redirect,
                    "challenge": form.get("code_challenge"),
                    "scope": scope,
                    "client_id": form.get("client_id"),
                }
            params.update(code=code, scope=scope)
        separator = "&" if "?" in redirect else "?"
        return 302, None, {"Location": f"{redirect}{separator}{urllib.parse.urlencode(params)}"}

    def _client_ok(self, form, headers):
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
            client_id, client_secret = urllib.parse.unquote(client_id), urllib.parse.unquote(client_secret)
        return client_id == self.client_id and client_secret == self.client_secret

    def _token(self, form, headers):
        invalid_grant = (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}, {})
        if not self._client_ok(form, headers):
            return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, {}
        with self.lock:
            if form.get("grant_type") == "authorization_code":
                grant = self.codes.pop(form.get("code", ""), None)
                if grant is None or grant["redirect_uri"] != form.get("redirect_uri"):
                    return invalid_grant
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if challenge != grant["challenge"]:
                    return 400, {"error": "invalid_grant", "error_description": "Invalid code verifier."}, {}
                refresh = self._new_token("1//fake-refresh-")
                self.grants[refresh] = {"account": grant["account"], "scope": grant["scope"]}
                access = self._issue_access(refresh)
                return 200, {"access_token": access, "expires_in": self.token_lifetime, "refresh_token": refresh, "scope": grant["scope"], "token_type": "Bearer"}, {}
            if form.get("grant_type") == "refresh_token":
                refresh = form.get("refresh_token", "")
                if refresh not in self.grants:
                    return invalid_grant
                access = self._issue_access(refresh)
                return 200, {"access_token": access, "expires_in": self.token_lifetime, "scope": self.grants[refresh]["scope"], "token_type": "Bearer"}, {}
        return 400, {"error": "unsupported_grant_type"}, {}

    def _revoke(self, params):
        token = params.get("token", "")
        with self.lock:
            if token in self.grants:
                self._revoke_grant(token)
            elif token in self.access_tokens:
                self._revoke_grant(self.access_tokens[token]["grant"])
            else:
                return 400, {"error": "invalid_token", "error_description": "Token expired or revoked"}, {}
        return 200, {}, {}

    # --- Calendar v3 ------------------------------------------------------------------------
    def _calendar(self, method, path, query, body, account):
        segments = [urllib.parse.unquote(s) for s in path.split("/")]
        data = self.accounts[account]
        if segments == ["users", "me", "calendarList"] and method == "GET":
            items = [{"id": cid, "summary": c["summary"], "accessRole": c["accessRole"], "primary": c.get("primary", False)} for cid, c in data["calendars"].items()]
            return 200, {"kind": "calendar#calendarList", "items": items}
        if len(segments) < 3 or segments[0] != "calendars" or segments[2] != "events":
            return _error(404, "notFound", "Not Found")
        calendar = self._calendar_id(account, segments[1])
        if calendar not in data["calendars"]:
            return _error(404, "notFound", "Not Found")
        writable = data["calendars"][calendar]["accessRole"] in ("owner", "writer")
        with self.lock:
            events = data["events"][calendar]
            if len(segments) == 3 and method == "GET":
                items = [e for e in events.values() if query.get("showDeleted") == "true" or e["status"] != "cancelled"]
                return 200, {"kind": "calendar#events", "items": items}
            if method != "GET" and not writable:
                return _error(403, "requiredAccessLevel", "You need to have writer access to this calendar.")
            if len(segments) == 3 and method == "POST":
                event = json.loads(body or b"{}")
                event_id = event.get("id") or secrets.token_hex(13)
                if not EVENT_ID.match(event_id):
                    return _error(400, "invalid", "Invalid resource id value.")
                if event_id in events:
                    return _error(409, "duplicate", "The requested identifier already exists.")
                if not event.get("start") or not event.get("end"):
                    return _error(400, "required", "Missing time range.")
                event.update(id=event_id, status=event.get("status", "confirmed"), sequence=0, updated=time.time(), sendUpdates=query.get("sendUpdates"))
                events[event_id] = event
                return 200, event
            if len(segments) != 4:
                return _error(404, "notFound", "Not Found")
            event = events.get(segments[3])
            if method == "GET":
                return (200, event) if event else _error(404, "notFound", "Not Found")
            if method == "PATCH":
                if event is None:
                    return _error(404, "notFound", "Not Found")
                patch = json.loads(body or b"{}")
                patch.pop("id", None)
                event.update(patch, sequence=event["sequence"] + 1, updated=time.time(), sendUpdates=query.get("sendUpdates"))
                return 200, event
            if method == "DELETE":
                if event is None:
                    return _error(404, "notFound", "Not Found")
                if event["status"] == "cancelled":
                    return _error(410, "deleted", "Resource has been deleted")
                event.update(status="cancelled", updated=time.time())
                return 204, None
        return _error(405, "methodNotAllowed", "Method not allowed")
