"""Real CalDAV servers for the tests (Radicale and Xandikos, run as subprocesses on a free loopback
port with a temporary storage directory), a counting proxy in front of them, and a tiny ICS server.

Nothing here is a fake: the proxy forwards every request to the real server and only records what
passed (method, path, status), or drops the answer of one request to play a lost response.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import caldav

from calendar_sync.providers.caldav import CLIENT_OPTIONS

PYTHON = sys.executable
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"CalDAV server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("CalDAV server did not start")


class CalDAVServer:
    """A running server: `url`, `username`, `password`, and `calendar_url` (one calendar for events)."""

    name = ""
    username = "alice"
    password = "correct horse"

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix=f"caldav-{self.name}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self):
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir
        )
        try:
            _wait_for(self.port, self.process)
            self.calendar_url = self.make_calendar()
        except BaseException:
            self.stop()  # never leave a server behind
            raise
        return self

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def client(self) -> caldav.DAVClient:
        """Another client of the same account (the member's phone, say), straight to the server."""
        return caldav.DAVClient(url=self.url, username=self.username, password=self.password, **CLIENT_OPTIONS)

    def make_calendar(self) -> str:
        raise NotImplementedError

    def calendar(self):
        return caldav.Calendar(client=self.client(), url=self.calendar_url)

    def events(self) -> list[str]:
        """The raw iCalendar text of every object in the calendar."""
        return [obj.data for obj in self.calendar().events()]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Radicale(CalDAVServer):
    """Radicale with htpasswd (plain) authentication: a wrong password is a real 401."""

    name = "radicale"

    def command(self):
        (self.dir / "users").write_text(f"{self.username}:{self.password}\n")
        return [
            PYTHON,
            "-m",
            "radicale",
            "--server-hosts",
            f"127.0.0.1:{self.port}",
            "--auth-type",
            "htpasswd",
            "--auth-htpasswd-filename",
            str(self.dir / "users"),
            "--auth-htpasswd-encryption",
            "plain",
            "--auth-delay",
            "0",
            "--storage-filesystem-folder",
            str(self.dir / "collections"),
        ]

    def make_calendar(self):
        principal = self.client().principal()
        return str(principal.make_calendar(name="Work", cal_id="work").url)


class Xandikos(CalDAVServer):
    """Xandikos with its default calendar (it serves one user and asks for no password)."""

    name = "xandikos"

    def command(self):
        return [
            str(BIN / "xandikos"),
            "serve",
            "-d",
            str(self.dir / "data"),
            "--defaults",
            "-l",
            "127.0.0.1",
            "-p",
            str(self.port),
            "--no-detect-systemd",
        ]

    def make_calendar(self):
        return f"{self.url}user/calendars/calendar/"


class CountingProxy:
    """A reverse proxy on its own loopback port that forwards everything to `target` and records
    (method, path, status). `lose_next(method)` forwards the next such request, then drops the
    connection instead of answering: the server did the work, the client never hears of it."""

    def __init__(self, target: str):
        self.target = target.rstrip("/")
        self.log: list[tuple[str, str, int | None]] = []
        self.losing: set[str] = set()
        self.refuse_sync = False  # answer sync-collection as a server without RFC 6578 does
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def __getattr__(self, name):
                if name.startswith("do_"):
                    return self.forward
                raise AttributeError(name)

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.refuse_sync and self.command == "REPORT" and b"sync-collection" in body:
                    proxy.log.append((self.command, self.path, 403))
                    refusal = b'<?xml version="1.0"?><d:error xmlns:d="DAV:"><d:supported-report/></d:error>'
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(refusal)))
                    self.end_headers()
                    self.wfile.write(refusal)
                    return
                host, port = proxy.target.split("//")[1].split(":")
                upstream = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                proxy.log.append((self.command, self.path, answer.status))
                if self.command in proxy.losing:
                    proxy.losing.discard(self.command)
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def lose_next(self, method: str):
        self.losing.add(method)

    def writes(self) -> list[tuple[str, int | None]]:
        """The successful writes that reached the server: (method, status)."""
        return [(m, s) for m, _, s in self.log if m in ("PUT", "DELETE") and s is not None and s < 300]

    def reset(self):
        self.log.clear()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class IcsServer:
    """Serves one ICS document at `url`, with a strong ETag, answering 304 to a matching If-None-Match.
    `hits` records (status, If-None-Match sent) per request."""

    def __init__(self, body: bytes):
        self.body = body
        self.hits: list[tuple[int, str | None]] = []
        ics = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != ics.path:  # a link that was reset: the old one is gone
                    ics.hits.append((404, None))
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = f'"{hashlib.sha256(ics.body).hexdigest()[:16]}"'
                sent = self.headers.get("If-None-Match")
                if sent == etag:
                    ics.hits.append((304, sent))
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                ics.hits.append((200, sent))
                self.send_response(200)
                self.send_header("Content-Type", "text/calendar")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(ics.body)))
                self.end_headers()
                self.wfile.write(ics.body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.path = "/secret-feed-4f9a2c/basic.ics"
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def proxied(server: CalDAVServer):
    proxy = CountingProxy(server.url)
    try:
        yield proxy
    finally:
        proxy.close()
