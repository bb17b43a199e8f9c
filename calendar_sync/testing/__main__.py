"""`python -m calendar_sync.testing [--port N] [--microsoft-port M] [--latency-ms L]`: serve the fake
Google and the fake Microsoft until interrupted.

`--latency-ms` (default: the environment's `FAKE_LATENCY_MS`, else 0) delays every answer of both, as
a real service's 100–300 ms would.

The first line printed is one JSON object of the environment variables that point the host
project at both. Each fake's root URL is a page of its accounts, calendars and events.
"""

import argparse
import json
import os
import time

from .fake_google import FakeGoogle
from .fake_microsoft import FakeMicrosoft

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--port", type=int, default=8765, help="the fake Google's port")
parser.add_argument("--client-id", default="sandbox-client-id", help="the fake Google's client id")
parser.add_argument("--client-secret", default="sandbox-client-secret", help="the fake Google's client secret")
parser.add_argument("--microsoft-port", type=int, default=8766, help="the fake Microsoft's port")
parser.add_argument("--microsoft-client-id", default="sandbox-ms-client-id", help="the fake Microsoft's client id")
parser.add_argument(
    "--microsoft-client-secret", default="sandbox-ms-client-secret", help="the fake Microsoft's client secret"
)
parser.add_argument(
    "--latency-ms",
    type=float,
    default=float(os.environ.get("FAKE_LATENCY_MS") or 0),
    help="milliseconds each request waits before it is answered (default: $FAKE_LATENCY_MS or 0)",
)
args = parser.parse_args()
latency = args.latency_ms / 1000

with (
    FakeGoogle(port=args.port, client_id=args.client_id, client_secret=args.client_secret, latency=latency) as google,
    FakeMicrosoft(
        port=args.microsoft_port,
        client_id=args.microsoft_client_id,
        client_secret=args.microsoft_client_secret,
        latency=latency,
    ) as microsoft,
):
    print(json.dumps({**google.env(), **microsoft.env()}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
