"""What both fakes share: a threaded HTTP server on 127.0.0.1, its lifecycle, and opaque tokens."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive answered at once (no Nagle delay), quiet, every method to `_handle`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _handle(self, method):
        raise NotImplementedError

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


class LoopbackServer:
    """Serve `handler` on 127.0.0.1 (`port` 0: any free port) from a daemon thread; a context manager."""

    thread_name = "fake-server"

    def _listen(self, port, handler):
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def encode_token(data):
    """A URL-safe opaque token carrying `data` (page tokens, sync tokens, delta tokens)."""
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token):
    """The dict inside a token from encode_token, or None for anything else."""
    try:
        data = json.loads(base64.urlsafe_b64decode(str(token) + "=" * (-len(str(token)) % 4)))
    except (ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None
